"""The ``ardm-infer`` command line: every error is one ``error:`` line and a non-zero status.

Error cases run in-process (``cli.main``) with the benchmark and the trainers replaced by a
function that fails the test if reached: each mistake must be caught before any model is
loaded.  One case goes through the installed entry point in a subprocess; one tiny benchmark
(forecast and enkf, 2 frames) runs twice, from a run file and from the equivalent flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ardm_infer import cli
from ardm_infer.cli_options import CliError, parse_sets, regime_list
from ardm_infer.observe import PRESET_NAMES
from ardm_infer.strategies import available_strategies

VOLATILE = {"wall_seconds", "ms_per_frame", "peak_memory_bytes"}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a benchmark or a training starts."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the command should have stopped before running anything")

    import ardm_infer.ardm.training
    import ardm_infer.bench
    import ardm_infer.controller.training

    monkeypatch.setattr(ardm_infer.bench, "benchmark", forbidden)
    monkeypatch.setattr(ardm_infer.ardm.training, "train_ardm", forbidden)
    monkeypatch.setattr(ardm_infer.controller.training, "train_controller", forbidden)


def assert_one_error(code: int, err: str, expected_code: int = 2, contains: str = "") -> None:
    lines = err.strip().splitlines()
    assert code == expected_code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert contains in lines[0], lines[0]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write into (as root: a path under /sys)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    folder = Path("/sys/ardm-infer-test")
    with pytest.raises(OSError):
        folder.mkdir()
    return folder


def bad_results(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.nc"
    xr.Dataset(
        {"rmse": (("strategy", "regime", "trajectory", "time"), np.zeros((1, 1, 1, 2)))}
    ).to_netcdf(good)
    truncated = tmp_path / "truncated" / "results.nc"
    truncated.parent.mkdir()
    truncated.write_bytes(good.read_bytes()[:1500])
    foreign = tmp_path / "foreign" / "results.nc"
    foreign.parent.mkdir()
    xr.Dataset({"temperature": ("x", np.arange(3.0))}).to_netcdf(foreign)
    return {"truncated": truncated.parent, "foreign": foreign.parent}


# ----------------------------------------------------------------------------- error cases

BENCH = ("bench", "--strategies", "forecast", "--horizon", "2", "--quiet")


@pytest.mark.parametrize(
    ("argv", "contains"),
    [
        (("bench", "--strategies", ""), "--strategies is empty"),
        (("bench", "--regimes", ""), "--regimes is empty"),
        (("bench", "--threads", "0"), "--threads: must be >= 1"),
        (("bench", "--members", "2.5"), "--members: expected an integer"),
        ((*BENCH, "--regimes", "stride=banana"), "regime 'stride=banana'"),
        ((*BENCH, "--regime", "dense", "--regime", "every=0"), "regime 'every=0'"),
        (("bench", "--strategies", "fourcast"), "did you mean 'forecast'"),
        (("bench", "--strategies", "dps", "--set", "dps.scale=abc"), "expected a number"),
        (("bench", "--strategies", "dps", "--set", "dps.scale=inf"), "a finite number"),
        (("bench", "--strategies", "dps", "--set", "dps.scal=2"), "no option 'scal'"),
        (("bench", "--strategies", "vc", "--set", "vc.window=2.5"), "expected an integer"),
        (("bench", "--strategies", "dps", "--set", "dps=2"), "<strategy>.<option>=<value>"),
        (("bench", "--strategies", "forecast", "--set", "dps.scale=2"), "not among"),
        (("bench", "--preset", "nope"), "preset 'nope' is unknown"),
        (("bench", "--device", "banana"), "--device 'banana'"),
        (("bench", "--config", "/nonexistent/run.toml"), "cannot read it"),
        (("train-ardm", "--ship"), "--ship needs a FOLDER"),
        (("train-controller", "--ship"), "--ship needs a FOLDER"),
        (("regimes", "stride=3, every=0"), "regime 'stride=3, every=0'"),
        (("report", "/nonexistent/folder"), "no such file or folder"),
        (("bench", "--bogus"), "unrecognized arguments: --bogus"),
        ((), "the following arguments are required: COMMAND"),
    ],
)
def test_mistakes_are_one_error_line(capsys, no_run, argv, contains):
    code, _, err = run(capsys, *argv)
    assert_one_error(code, err, 2, contains)


def test_out_that_is_a_file_or_read_only(capsys, no_run, tmp_path: Path, read_only_dir: Path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    code, _, err = run(capsys, *BENCH, "--out", str(a_file))
    assert_one_error(code, err, 2, "is a file")
    code, _, err = run(capsys, *BENCH, "--out", str(read_only_dir / "out"))
    assert_one_error(code, err, 2, "cannot write there")


@pytest.mark.parametrize("kind", ["truncated", "foreign"])
def test_report_on_a_bad_netcdf(capsys, tmp_path: Path, kind: str):
    folder = bad_results(tmp_path)[kind]
    code, _, err = run(capsys, "report", str(folder))
    expected = "not a readable netCDF" if kind == "truncated" else "not an ardm-infer benchmark"
    assert_one_error(code, err, 2, expected)


@pytest.mark.parametrize(
    ("text", "contains"),
    [
        ("[bench\n", "not valid TOML"),
        ("[bench]\nhorizn = 3\n", "unknown key 'horizn'"),
        ("[bench]\nhorizon = '3'\n", "[bench] horizon: expected a int"),
        ("[bench]\nstrategies = [1, 2]\n", "an array of strings"),
        ("[bench]\nhorizon = 0\n", "horizon must be an integer >= 1"),
        ("[bench]\nstrategies = []\n", "strategies in the run file is empty"),
        ("[options.dps]\nscael = 2\n", "dps has no option 'scael'"),
        ("[other]\nx = 1\n", "unknown table(s) other"),
    ],
)
def test_bad_run_files(capsys, no_run, tmp_path: Path, text: str, contains: str):
    path = tmp_path / "run.toml"
    path.write_text(text)
    code, _, err = run(capsys, "bench", "--config", str(path), "--quiet")
    assert_one_error(code, err, 2, contains)


def test_debug_shows_the_traceback_and_failures_exit_1(capsys, monkeypatch, tmp_path: Path):
    code, _, err = run(capsys, "bench", "--strategies", "", "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("error: --strategies is empty")

    def boom(*args, **kwargs):
        raise RuntimeError("the cell exploded\nsecond line")

    import ardm_infer.bench

    monkeypatch.setattr(ardm_infer.bench, "benchmark", boom)
    code, _, err = run(capsys, *BENCH, "--out", str(tmp_path / "out"))
    assert_one_error(code, err, 1, "error: RuntimeError: the cell exploded second line")
    assert "--debug shows the traceback" in err


def test_entry_point_in_a_subprocess():
    script = Path(sys.executable).with_name("ardm-infer")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ardm_infer.cli"]
    done = subprocess.run(
        [*command, "bench", "--regimes", ""], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --regimes is empty; give 'all', preset names or specs separated by ';' "
        "(e.g. --regimes 'dense;stride=16, every=1, sigma=0.02')"
    ]


# ----------------------------------------------------------------------------- what works


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("ardm-infer 0.")
    code, out, _ = run(capsys, "bench", "--help")
    assert code == 0
    for text in ("--config", "--set", "--regime ", "--device", "--ardm", "--controller"):
        assert text in out
    assert "(default: quick)" in out and "(default: 1)" in out and "first-look" in out
    code, out, _ = run(capsys, "train-controller", "--help")
    assert code == 0 and "--ardm" in out and "--ship [FOLDER]" in out and "(default: ks)" in out


def test_strategies_lists_names_options_and_defaults(capsys):
    code, out, _ = run(capsys, "strategies")
    assert code == 0
    for name in available_strategies():
        assert f"\n{name}: " in f"\n{out}"
    assert "    scale: float = 1.0" in out and "look-ahead:" in out
    assert "    localisation_radius: float or None = None   range: > 0, or None" in out
    assert "controller: " in out and "depends on its options: The preview buffer" in out
    code, out, _ = run(capsys, "strategies", "vc")
    assert code == 0 and "window: int = 4" in out and "dps:" not in out


def test_strategy_options_are_typed():
    options = parse_sets(
        [
            "dps.scale=2",
            "dps.normalise=false",
            "vc.window=3",
            "enkf.localisation_radius=none",
            "enkf.inflation=1.05",
            "enkf.variant=perturbed",
        ]
    )
    assert options == {
        "dps": {"scale": 2.0, "normalise": False},
        "vc": {"window": 3},
        "enkf": {"localisation_radius": None, "inflation": 1.05, "variant": "perturbed"},
    }
    assert isinstance(options["dps"]["scale"], float) and isinstance(options["vc"]["window"], int)
    assert parse_sets(["enkf.localisation_radius=8"]) == {"enkf": {"localisation_radius": 8.0}}
    with pytest.raises(CliError, match="expected true or false"):
        parse_sets(["dps.normalise=maybe"])


def test_regime_lists(capsys):
    spec = "stride=16, every=1, sigma=0.02"
    assert regime_list([f"dense;{spec}"], "--regimes", PRESET_NAMES) == ["dense", spec]
    assert regime_list([spec], "--regimes", PRESET_NAMES) == [spec]
    assert regime_list(["sparse-gappy, sigma=0.2"], "--regimes", PRESET_NAMES) == [
        "sparse-gappy, sigma=0.2"
    ]
    assert capsys.readouterr().err == ""
    assert regime_list(["dense,sparse"], "--regimes", PRESET_NAMES) == ["dense", "sparse"]
    warning = capsys.readouterr().err
    assert warning.startswith("warning: --regimes 'dense,sparse'") and "deprecated" in warning


# ----------------------------------------------------------------------------- a real run

RUN_FILE = """\
[bench]
strategies = ["forecast", "enkf"]
regimes = ["sparse", "stride=16, every=2, sigma=0.05"]
horizon = 2
trajectories = 1
members = 2
seed = 3
figures = false

[options.enkf]
inflation = 1.1
"""


@pytest.fixture(scope="module")
def toml_and_flags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny benchmark from a run file and from the equivalent flags."""
    root = tmp_path_factory.mktemp("cli")
    (root / "run.toml").write_text(RUN_FILE)
    common = ["--quiet", "--threads", "1"]
    assert (
        cli.main(["bench", "--config", str(root / "run.toml"), "--out", str(root / "a"), *common])
        == 0
    )
    flags = [
        "bench",
        "--strategies",
        "forecast,enkf",
        "--regimes",
        "sparse;stride=16, every=2, sigma=0.05",
        "--horizon",
        "2",
        "--trajectories",
        "1",
        "--members",
        "2",
        "--seed",
        "3",
        "--set",
        "enkf.inflation=1.1",
        "--no-figures",
        "--out",
        str(root / "b"),
        *common,
    ]
    assert cli.main(flags) == 0
    return root / "a", root / "b"


def test_run_file_reproduces_the_flags(toml_and_flags):
    a, b = (xr.load_dataset(p / "results.nc", engine="h5netcdf") for p in toml_and_flags)
    assert set(a.data_vars) == set(b.data_vars)
    for name in a.data_vars:
        if name not in VOLATILE:
            xr.testing.assert_identical(a[name], b[name])
    assert json.loads(a.attrs["config"]) == json.loads(b.attrs["config"])
    strategies = json.loads(a.attrs["config"])["strategies"]
    assert strategies[1]["config"]["inflation"] == 1.1
    request = json.loads(a.attrs["cli_request"])
    assert request["run_file_text"] == RUN_FILE
    assert (toml_and_flags[0] / "run.toml").read_text() == RUN_FILE
    assert json.loads(b.attrs["cli_request"])["run_file_text"] is None
    for folder in toml_and_flags:
        assert (folder / "summary.csv").exists() and (folder / "report.md").exists()


def test_flags_override_the_run_file_and_report_rebuilds(capsys, toml_and_flags, tmp_path):
    a, _ = toml_and_flags
    code, out, _ = run(capsys, "report", str(a))
    assert code == 0 and "sparse" in out and (a / "figures" / "summary.png").exists()
    from ardm_infer.cli_bench import _bench_request

    args = cli.build_parser().parse_args(
        ["bench", "--config", str(a / "run.toml"), "--horizon", "5", "--regime", "dense"]
    )
    request = _bench_request(args)
    assert request["horizon"] == 5 and request["regimes"] == ["dense"]
    assert request["members"] == 2 and request["strategy_options"] == {"enkf": {"inflation": 1.1}}


def test_first_look_preset_resolves_to_its_run():
    from ardm_infer.cli_bench import _bench_request

    request = _bench_request(cli.build_parser().parse_args(["bench", "--preset", "first-look"]))
    assert request["pdes"] == ["ks"] and request["strategies"] == ["forecast", "enkf"]
    assert request["regimes"] == ["sparse"] and request["horizon"] == 64
    assert request["initial"] is None  # the preset's: the protocol's background start
    assert request["strategy_options"] == {} and request["tuned"] is True
    assert str(request["out"]) == "results/bench-first-look"
    override = ["bench", "--preset", "first-look", "--members", "6", "--set", "enkf.inflation=1"]
    override += ["--initial", "exact"]
    request = _bench_request(cli.build_parser().parse_args(override))
    assert request["members"] == 6 and request["strategy_options"]["enkf"]["inflation"] == 1.0
    assert request["initial"] == "exact"
    request = _bench_request(cli.build_parser().parse_args(["bench", "--untuned"]))
    assert request["tuned"] is False
    assert cli.main(["bench", "--untuned", "--tuned", "x.json"]) == 2
    assert cli.main(["bench", "--tuned", "no-such-file.json"]) == 2
