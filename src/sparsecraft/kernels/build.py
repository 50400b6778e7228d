"""``python -m sparsecraft.kernels.build``: compile the native kernels now (normally done on first use).

Exit 0 and one line naming the ISA paths on success; exit 1 with the compiler's error otherwise.
"""
from __future__ import annotations

import sys


def main() -> int:
    """Build the kernels (``-v`` in ``sys.argv`` shows the compiler's output).

    Returns
    -------
    int
        The exit status: 0 when built, 1 when the build failed (the error is printed to stderr).
    """
    from ._native import ISAS, _build, build_dir

    try:
        module = _build(verbose="-v" in sys.argv[1:])
    except Exception as err:  # noqa: BLE001
        print(f"sparsecraft: native kernel build failed: {err}", file=sys.stderr)
        return 1
    print(f"sparsecraft kernels built in {build_dir()} (ISA paths: {', '.join(ISAS[: module.cpu_isa() + 1])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
