import os

import pytest
import torch

from pyg_infdiff.training import (
    CheckpointManager,
    capture_rng_state,
    check_storable,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    state_is_finite,
)

EXECUTED: list[str] = []


def _side_effect() -> str:
    EXECUTED.append("ran")
    return "pwned"


class Evil:
    def __reduce__(self):
        return (_side_effect, ())


def _state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "step": 1, "names": ["a", "b"],
            "nested": {"t": (1, 2.5, None), "flag": True}}


def test_roundtrip_weights_only(tmp_path):
    path = save_checkpoint(_state(1.0), tmp_path / "sub" / "a.pt")
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded["model"]["w"], torch.ones(3))
    assert loaded["names"] == ["a", "b"] and loaded["nested"]["t"] == (1, 2.5, None)
    assert [p.name for p in path.parent.iterdir()] == ["a.pt"]  # no temporary file left


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1.0), tmp_path / "a.pt")
    before = path.read_bytes()

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_state(2.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    torch.testing.assert_close(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]

    def crash_on_rename(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash_on_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(3.0), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]


def test_loader_rejects_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(ValueError, match="Refusing to load"):
        load_checkpoint(path)
    assert EXECUTED == []
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_manager_keeps_last_k(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    assert manager.latest() is None
    (tmp_path / "ckpt_abc.pt").write_text("not a checkpoint")
    (tmp_path / "other_00000099.pt").write_text("other prefix")
    (tmp_path / ".ckpt_00000007.pt.123.tmp").write_bytes(b"stale")
    for step in (1, 2, 10, 3, 20):
        manager.save({"step": step}, step)
    assert [s for s, _ in manager.checkpoints()] == [10, 20]
    assert manager.latest() == tmp_path / "ckpt_00000020.pt"
    assert load_checkpoint(manager.latest())["step"] == 20
    assert not (tmp_path / ".ckpt_00000007.pt.123.tmp").exists()
    assert (tmp_path / "ckpt_abc.pt").exists() and (tmp_path / "other_00000099.pt").exists()
    keep_all = CheckpointManager(tmp_path, keep_last=None)
    keep_all.save({"step": 30}, 30)
    assert len(keep_all.checkpoints()) == 3
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointManager(tmp_path, keep_last=0)


def test_check_storable_and_finite():
    check_storable({"a": [1, 2.0, "x", None, (True,)], 3: torch.zeros(2)})
    with pytest.raises(ValueError, match=r"cfg\['obj'\]"):
        check_storable({"obj": object()}, "cfg")
    with pytest.raises(ValueError, match="key"):
        check_storable({(1, 2): 1})
    assert state_is_finite({"a": [torch.ones(2)], "b": torch.arange(3)})
    assert not state_is_finite({"a": [torch.tensor([1.0, float("nan")])]})
    assert not state_is_finite((torch.tensor(float("inf")),))


def test_rng_state_roundtrip(tmp_path):
    gen = torch.Generator().manual_seed(5)
    state = capture_rng_state({"g": gen})
    expected = (torch.rand(3), torch.rand(3, generator=gen))
    path = save_checkpoint({"rng": state}, tmp_path / "rng.pt")
    restore_rng_state(load_checkpoint(path)["rng"], {"g": gen})
    torch.testing.assert_close(torch.rand(3), expected[0], rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(3, generator=gen), expected[1], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no state for generator 'h'"):
        restore_rng_state(state, {"h": torch.Generator()})
