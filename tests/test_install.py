"""The install is the lock: setup.cfg and uv.lock agree, a lock that disagrees is caught, and a torchaudio
from another torch release gives one line naming the fix (``fstore doctor``, a library import, a
command), in a scratch environment that really holds the wrong torchaudio."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from featurestore import torch_pair
from featurestore.torch_pair import BrokenInstallError, installed, release

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pyproject.toml", "setup.cfg", "uv.lock", "README.md")


@pytest.fixture(scope="module")
def uv() -> str:
    """The pinned uv (`make test` passes it in $UV; otherwise tools/uv.sh finds or bootstraps it)."""
    path = os.environ.get("UV") or subprocess.run(["bash", str(ROOT / "tools" / "uv.sh")], capture_output=True,
                                                  text=True, check=True).stdout.strip()
    assert Path(path).is_file(), path
    return path


def lock_check(uv: str, project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([uv, "lock", "--check", "--project", str(project)], capture_output=True, text=True,
                          env={**os.environ, "UV_PYTHON": sys.executable})


def test_lock_matches_setup_cfg(uv: str) -> None:
    result = lock_check(uv, ROOT)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("edit", [
    ("    click>=8.1\n", "    click>=8.1,!=8.5.1\n"),  # the locked click is no longer allowed
    ("    scipy>=1.11\n", "    scipy>=1.11\n    six>=1.0\n"),  # a new dependency the lock lacks
])
def test_lock_that_disagrees_with_setup_cfg_fails(uv: str, tmp_path: Path, edit: tuple[str, str]) -> None:
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    cfg = tmp_path / "setup.cfg"
    text = cfg.read_text()
    assert edit[0] in text
    cfg.write_text(text.replace(edit[0], edit[1]))
    result = lock_check(uv, tmp_path)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr


def test_setup_cfg_pins_torchaudio_to_torchs_release() -> None:
    torch_pin, audio_pin = torch_pair.pinned("torch"), torch_pair.pinned("torchaudio")
    assert torch_pin and audio_pin, "setup.cfg must pin torch and torchaudio exactly"
    assert torch_pin == audio_pin


# --- the one line ----------------------------------------------------------------------------------

def test_import_failure_with_matching_versions_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str) -> None:
        raise OSError("Could not load this library: libtorchaudio.so\nundefined symbol: x")

    versions = {"torch": "2.11.0+cu130", "torchaudio": "2.11.0"}  # a pair from one release that still fails
    monkeypatch.setattr(torch_pair, "installed", versions.get)
    monkeypatch.setattr(torch_pair.importlib, "import_module", broken)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # the hook it installs goes with the test
    with pytest.raises(BrokenInstallError) as e:
        torch_pair.import_torchaudio("models")
    line = str(e.value)
    assert "\n" not in line
    assert line.startswith("torchaudio 2.11.0 does not load with torch 2.11.0 (Could not load this library")
    assert "Could not load this library: libtorchaudio.so" in line and "make" in line


def test_fix_for_an_untested_torch_is_the_pinned_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"torch": "2.99.0", "torchaudio": "2.11.1"}
    monkeypatch.setattr(torch_pair, "installed", versions.get)
    pin = torch_pair.pinned("torch")
    assert torch_pair.pair_problem() == (
        f"torchaudio 2.11.1 cannot load with torch 2.99.0: install torch=={pin} torchaudio=={pin} (the tested "
        "pair), or run `make`, which installs from the lock")


@pytest.fixture(scope="module")
def wrong_torchaudio(uv: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A scratch environment that sees this environment's packages, with a torchaudio of another release
    installed in front of them (`uv pip install --no-deps`: one 2 MB wheel, cached after the first run)."""
    torch_version = release(installed("torch"))
    wrong = "2.11.1" if torch_version == "2.11.0" else "2.11.0"
    env = tmp_path_factory.mktemp("wrong-torchaudio") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), "--no-deps", f"torchaudio=={wrong}"],
                   check=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # after its own site-packages: the wrong torchaudio shadows the right one, everything else is ours
    Path(site, "zz_fstore_env.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    fix = (f"install torchaudio=={torch_version}" if torch_version == torch_pair.pinned("torch") else
           f"install torch=={torch_pair.pinned('torch')} torchaudio=={torch_pair.pinned('torchaudio')} (the tested pair)")
    expected = f"torchaudio {wrong} cannot load with torch {torch_version}: {fix}, or run `make`, which installs from the lock"

    return python, expected


def run_in(python: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def test_doctor_catches_a_mismatched_torchaudio(wrong_torchaudio: tuple[Path, str], tmp_path: Path) -> None:
    python, expected = wrong_torchaudio
    result = run_in(python, "-m", "featurestore.cli", "doctor", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"problem: {expected}"]
    assert "torchaudio: 2.11" in result.stdout and "(extension does not load)" in result.stdout


def test_library_import_gives_the_same_one_line(wrong_torchaudio: tuple[Path, str], tmp_path: Path) -> None:
    python, expected = wrong_torchaudio
    result = run_in(python, "-c", "from loaders import SessionBatches", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"fstore: {expected}"]


def test_command_gives_the_same_one_line(wrong_torchaudio: tuple[Path, str], tmp_path: Path) -> None:
    python, expected = wrong_torchaudio
    result = run_in(python, "-m", "featurestore.cli", "ingest", "fsd", str(tmp_path / "raw"), str(tmp_path / "s"),
                    tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"Error: {expected}"]


def test_doctor_on_this_install(tmp_path: Path) -> None:
    secret = "s3cr3t-value-never-printed"
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": secret,
           "FSTORE_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": ""}
    (tmp_path / "cache" / "objects").mkdir(parents=True)
    (tmp_path / "cache" / "objects" / "a").write_bytes(b"x" * 2_500_000)
    result = subprocess.run([sys.executable, "-m", "featurestore.cli", "doctor"], capture_output=True, text=True,
                            env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert secret not in out + result.stderr
    assert "AWS_ENDPOINT_URL" in out and "AWS_SECRET_ACCESS_KEY" in out
    assert f"cache: {tmp_path / 'cache'} ($FSTORE_CACHE): 2.5 MB" in out
    assert "(extension loads)" in out and "cuda: no device" in out
    assert "codecs: fstore.affine_u8, fstore.exact_u8, fstore.quantile_u8" in out
    for name in ("python:", "fstore:", "numba:", "threading layer", "polars", "zarr", "numcodecs", "pyarrow"):
        assert name in out
    assert out.rstrip().endswith("no problems found")


def test_doctor_reports_a_package_outside_its_range(monkeypatch: pytest.MonkeyPatch) -> None:
    from featurestore.cli import doctor

    real = doctor.installed
    monkeypatch.setattr(doctor, "installed", lambda name: "8.0.0" if name == "click" else real(name))
    _, problems = doctor.check_requirements()
    monkeypatch.setattr(doctor, "installed", real)
    _, before = doctor.check_requirements()  # none here; with `make test-latest OVERRIDES=...` maybe some
    assert [p for p in problems if p not in before] == [
        "click 8.0.0 is outside fstore's range click>=8.1: run `make`, which installs from the lock"]
