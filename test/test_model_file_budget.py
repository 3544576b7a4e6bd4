"""Issue 15, case 1: a ~1 MB model file must not make ``torch.load`` allocate gigabytes.

A model file is a zip archive; ``torch.load`` extracts every storage its pickle names, and a
deflated zero-filled entry is ~1000x smaller on disk than in memory. The loaders now read the
zip directory first (:func:`mbrl_control.models.guards.check_model_archive`) and refuse, in one
line, archives over the budget or unlike what ``torch.save`` writes, before ``torch.load`` runs.
"""

from __future__ import annotations

import shutil
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
import torch

from mbrl_control import MbrlError
from mbrl_control.apps import cli
from mbrl_control.models import guards
from mbrl_control.models.predictor import load_predictor
from mbrl_control.models.semiparametric import SemiParametricModel, physics_only

DT_S = 0.02
MIB = 2**20


@pytest.fixture
def fitted(params, tmp_path) -> Path:
    """A valid model file whose residual has non-zero weights (as after a fit)."""
    model = physics_only(params, DT_S)
    gen = torch.Generator().manual_seed(15)
    with torch.no_grad():
        for tensor in model.residual.parameters():
            tensor.copy_(0.01 * torch.randn(tensor.shape, generator=gen, dtype=tensor.dtype))
    return model.save(tmp_path / "fitted.pt")


def add_zero_entry(model_file: Path, out: Path, size_bytes: int) -> Path:
    """A copy of ``model_file`` with one more entry of ``size_bytes`` zeros, deflated (streamed)."""
    shutil.copy(model_file, out)
    block = bytes(MIB)
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        folder = archive.namelist()[0].split("/")[0]
        with archive.open(f"{folder}/data/999", "w", force_zip64=True) as entry:
            for _ in range(size_bytes // MIB):
                entry.write(block)
    return out


def deflate_all(model_file: Path, out: Path) -> Path:
    """The same archive with every entry deflated: torch.load reads it as it is."""
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    return out


@pytest.fixture
def no_torch_load(monkeypatch):
    """Fail the test if anything reaches torch.load."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a file the guard should have refused")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_model_file_with_a_compressed_zero_entry_is_refused_before_torch_load(fitted, tmp_path, no_torch_load):
    bomb = add_zero_entry(fitted, tmp_path / "bomb.pt", guards.MODEL_FILE_BUDGET_BYTES + 64 * MIB)
    assert bomb.stat().st_size < 2 * MIB  # ~1000x smaller on disk than extracted
    tracemalloc.start()
    tic = time.perf_counter()
    try:
        with pytest.raises(MbrlError, match="over the budget of 256.0 MiB") as err:
            SemiParametricModel.load(bomb)
        elapsed_s = time.perf_counter() - tic
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "\n" not in str(err.value) and "would extract to 320.1 MiB" in str(err.value)
    assert elapsed_s < 1.0
    assert peak_bytes < 4 * MIB, peak_bytes
    with pytest.raises(MbrlError, match="over the budget"):
        load_predictor(bomb)


def test_torch_would_load_a_deflated_archive_so_the_guard_refuses_compressed_entries(fitted, tmp_path, monkeypatch):
    packed = deflate_all(fitted, tmp_path / "packed.pt")
    assert isinstance(torch.load(packed, map_location="cpu", weights_only=True), dict)  # torch itself accepts it
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load reached"))
    with pytest.raises(MbrlError, match="compressed entry .*torch.save stores entries uncompressed"):
        SemiParametricModel.load(packed)


@pytest.mark.parametrize("content, reason", [
    (b"\x80\x02}q\x00." + bytes(64), "not a zip archive"),  # a pickle (torch's legacy format)
    (bytes(range(256)) * 8, "not a zip archive"),
], ids=["legacy-pickle", "noise"])
def test_files_that_are_not_zip_archives_are_refused(tmp_path, no_torch_load, content, reason):
    path = tmp_path / "m.pt"
    path.write_bytes(content)
    with pytest.raises(MbrlError, match=reason):
        SemiParametricModel.load(path)


def test_a_zip_without_torch_layout_is_refused(tmp_path, no_torch_load):
    path = tmp_path / "m.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/data.pkl", b"x")
        archive.writestr("b/other", b"y")
    with pytest.raises(MbrlError, match="lacks torch.save's layout"):
        SemiParametricModel.load(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/version", b"3")
    with pytest.raises(MbrlError, match="lacks torch.save's layout"):
        SemiParametricModel.load(path)


def test_a_file_larger_than_the_budget_is_refused_by_its_size(fitted, no_torch_load):
    with pytest.raises(MbrlError, match="over the budget"):
        guards.check_model_archive(fitted, budget_bytes=fitted.stat().st_size - 1)


def test_a_fitted_model_still_loads_with_its_weights(fitted, params):
    guards.check_model_archive(fitted)
    model = SemiParametricModel.load(fitted, dtype=torch.float64)
    saved = torch.load(fitted, map_location="cpu", weights_only=True)["residual_state"]
    loaded = model.residual.state_dict()
    assert any(float(t.abs().sum()) > 0 for t in saved.values())
    assert all(torch.allclose(loaded[name].double(), saved[name].double()) for name in saved)
    state = torch.zeros((1, 7), dtype=torch.float64)
    state[0, 3] = 2.0
    assert torch.all(torch.isfinite(model(state, torch.tensor([[0.1, 1.0]], dtype=torch.float64))))


def test_sim_refuses_the_bomb_in_one_line(fitted, tmp_path, capsys):
    bomb = add_zero_entry(fitted, tmp_path / "bomb.pt", guards.MODEL_FILE_BUDGET_BYTES + 16 * MIB)
    rc = cli.main(["sim", "--model", str(bomb), "--quiet", "--max-time", "0.5", "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and "over the budget" in err[0], err
    assert not (tmp_path / "run" / "summary.json").exists()
