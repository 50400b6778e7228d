"""Issue 20 item 8: options out of range and an eval set too small for -k are refused up front in
one line, exit 2, nothing written."""
import pytest


@pytest.mark.parametrize("argv,message", [
    (("train", "--method", "set", "--update-every", "0"), "--update-every must be an integer >= 1, got 0"),
    (("train", "--method", "masksparsity", "--penalty", "inf"), "--penalty must be a finite number >= 0, got inf"),
    (("posttrain", "--method", "owl-wanda", "--owl-m", "-1"), "--owl-m must be a finite number > 0, got -1.0"),
    (("posttrain", "--method", "sparsegpt", "--percdamp", "nan"), "--percdamp must be a finite number > 0, got nan"),
    (("posttrain", "--method", "sparsegpt", "--percdamp", "0"), "--percdamp must be a finite number > 0, got 0.0"),
])
def test_out_of_range_options_are_refused_before_any_work(cli, tmp_path, argv, message):
    line = cli.fails(*argv, "--out", tmp_path / "out.safetensors", match=message)
    assert line.endswith(message) and "Hessian" not in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (("--eval-samples", "1"), "-k 10 needs 11 eval texts (each is compared with its 10 nearest others), but "
                              "--eval-samples 1 gives 1: use --eval-samples 11 or more (0 = all 163)"),
    (("--eval-samples", "5", "-k", "5"), "-k 5 needs 6 eval texts (each is compared with its 5 nearest others), "
                                         "but --eval-samples 5 gives 5: use --eval-samples 6 or more (0 = all 163) "
                                         "or -k 4 or less"),
    (("-k", "500"), "-k 500 needs 501 eval texts (each is compared with its 500 nearest others), but "
                    "--eval-samples 0 gives 163: use -k 162 or less"),
    (("-k", "0"), "-k must be an integer >= 1, got 0"),
])
def test_eval_set_too_small_for_k_says_so(cli, tmp_path, argv, message):
    line = cli.fails("eval", "--checkpoint", tmp_path / "ck.safetensors", *argv, match=message)
    assert line.endswith(message)
