"""Memories built on sparse codes: Sparsey's sparse distributed representation memory."""
from .sparsey import BucketEncoder, SparseyMemory

__all__ = ["BucketEncoder", "SparseyMemory"]
