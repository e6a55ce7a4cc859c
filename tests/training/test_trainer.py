import json
import math
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader as TorchDataLoader
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from pyg_infdiff.training import NonFiniteLossError, Trainer, TrainerConfig, load_checkpoint
from pyg_infdiff.training.cursor import move_to_device


def _dataset(num_graphs: int = 10, seed: int = 0) -> list[Data]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.tensor([[1.0], [-2.0], [0.5]])
    graphs = []
    for _ in range(num_graphs):
        x = torch.randn(4, 3, generator=gen)
        graphs.append(Data(x=x, y=x @ w + 0.3, pos=torch.rand(4, 2, generator=gen)))
    return graphs


class ToyStream:
    r"""A deterministic iterable whose epoch order depends only on (seed, epoch)."""

    def __init__(self, graphs: list[Data], batch_size: int = 2, seed: int = 7) -> None:
        self.graphs, self.batch_size, self.seed, self.epoch = graphs, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.graphs), generator=gen).tolist()
        for i in range(0, len(order), self.batch_size):
            yield Batch.from_data_list([self.graphs[j] for j in order[i:i + self.batch_size]])


def _mse(model: nn.Module, batch: Batch) -> torch.Tensor:
    return ((model(batch.x) - batch.y) ** 2).mean()


def _config(tmp_path, **kwargs) -> TrainerConfig:
    base = dict(lr=0.05, warmup_steps=3, max_steps=10, ema_decay=0.9, log_every=2,
                checkpoint_every=4, sample_every=None, keep_last=5, out_dir=str(tmp_path),
                device="cpu", progress=False, verbose=False, plot_loss=False)
    base.update(kwargs)
    return TrainerConfig(**base)


def _model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(3, 1))


def test_trainer_reduces_toy_loss_and_writes_logs(tmp_path):
    model = _model()
    calls = []

    def sample_fn(m, step, out_dir):
        calls.append((step, m is trainer.ema.module, m.training))
        (out_dir / f"grid_{step}.png").write_bytes(b"png")

    cfg = _config(tmp_path, max_steps=60, warmup_steps=5, log_every=10, checkpoint_every=20,
                  sample_every=30, keep_last=2, ema_decay=0.8, plot_loss=True)
    trainer = Trainer(model, _mse, cfg, sample_fn=sample_fn, model_config={"hidden": 3})
    loader = DataLoader(_dataset(), batch_size=2, shuffle=True, generator=torch.Generator())
    with torch.no_grad():
        first = float(_mse(model, Batch.from_data_list(_dataset())))
    result = trainer.fit(loader)
    with torch.no_grad():
        last = float(_mse(model, Batch.from_data_list(_dataset())))
    assert result.step == 60 and result.bad_steps == 0 and result.epoch == 11
    assert last < 0.05 * first
    assert calls == [(30, True, False), (60, True, False)]
    assert sorted(os.listdir(tmp_path / "samples")) == ["grid_30.png", "grid_60.png"]
    assert [p.name for p in sorted((tmp_path / "checkpoints").iterdir())] == [
        "ckpt_00000040.pt", "ckpt_00000060.pt"]
    assert result.checkpoint == tmp_path / "checkpoints" / "ckpt_00000060.pt"
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "start" and start["num_parameters"] == 4
    assert start["model_config"] == {"hidden": 3}
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert train[-1]["loss"] < train[0]["loss"]
    csv_lines = (tmp_path / "log.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,epoch,loss,lr") and len(csv_lines) == 7
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = load_checkpoint(result.checkpoint)
    assert ckpt["step"] == 60 and ckpt["model_config"] == {"hidden": 3}
    assert ckpt["trainer_config"]["max_steps"] == 60


def test_warmup_then_constant_lr(tmp_path):
    lrs = []

    def loss_fn(model, batch):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return _mse(model, batch)

    cfg = _config(tmp_path, lr=0.1, warmup_steps=4, max_steps=7, checkpoint_every=None)
    trainer = Trainer(_model(), loss_fn, cfg)
    trainer.fit(ToyStream(_dataset()))
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1])
    no_warmup = Trainer(_model(), _mse, _config(tmp_path, warmup_steps=0))
    assert no_warmup.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_cosine_decay_ends_at_max_steps_and_follows_it_when_moved(tmp_path):
    lrs = []

    def loss_fn(model, batch):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return _mse(model, batch)

    cfg = _config(tmp_path, lr=0.1, warmup_steps=2, max_steps=6, lr_schedule="cosine",
                  min_lr_ratio=0.1, checkpoint_every=None)
    trainer = Trainer(_model(), loss_fn, cfg)
    trainer.fit(ToyStream(_dataset()))
    # Updates 1..6: warm-up 0.5, 1, then 0.1 + 0.9 * (1 + cos(pi * (s - 2) / 4)) / 2.
    expected = [0.05, 0.1] + [0.1 * (0.1 + 0.45 * (1 + math.cos(math.pi * p / 4)))
                              for p in (1, 2, 3, 4)]
    assert lrs == pytest.approx(expected)

    def stretching(model, batch):  # a time budget that finds it has room for 10 steps, not 6
        lrs.append(moved.optimizer.param_groups[0]["lr"])
        moved.config.max_steps = 10
        return _mse(model, batch)

    lrs.clear()
    moved = Trainer(_model(), stretching, _config(tmp_path / "moved", lr=0.1, warmup_steps=2,
                                                  max_steps=6, lr_schedule="linear",
                                                  checkpoint_every=None))
    moved.fit(ToyStream(_dataset()))
    assert moved.step == 10
    assert lrs[2:] == pytest.approx([0.1 * (1 - p / 8) for p in range(1, 9)])
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        _config(tmp_path, lr_schedule="step")
    with pytest.raises(ValueError, match="min_lr_ratio must lie in"):
        _config(tmp_path, min_lr_ratio=-0.1)


def test_bf16_autocast(tmp_path):
    dtypes = []

    def loss_fn(model, batch):
        out = model(batch.x)
        dtypes.append(out.dtype)
        return ((out.float() - batch.y) ** 2).mean()

    trainer = Trainer(_model(), loss_fn, _config(tmp_path, bf16=True, max_steps=3))
    result = trainer.fit(ToyStream(_dataset()))
    assert dtypes == [torch.bfloat16] * 3 and result.step == 3
    assert trainer.model[1].weight.dtype == torch.float32


def _noisy_loss(model, batch, generator):
    # Uses the global RNG (dropout, randn_like) and the trainer's generator, so that resuming
    # is only exact if every RNG state comes back.
    jitter = torch.randn(batch.y.shape, generator=generator)
    pred = model(batch.x) + 0.01 * torch.randn_like(batch.y)
    return ((pred - batch.y - 0.01 * jitter) ** 2).mean()


def _crashing(after: int, exc: BaseException):
    calls = [0]

    def loss_fn(model, batch, generator):
        calls[0] += 1
        if calls[0] > after:
            raise exc
        return _noisy_loss(model, batch, generator)

    return loss_fn


def _noisy_collate(graphs: list[Data]) -> Batch:
    batch = Batch.from_data_list(graphs)
    batch.y = batch.y + 0.1 * torch.randn(batch.y.shape)  # global RNG, like augmentation
    return batch


@pytest.mark.parametrize("kind", ["pyg_loader", "set_epoch_stream", "global_rng_collate"])
def test_resume_matches_uninterrupted_run(tmp_path, kind):
    def data():
        if kind == "pyg_loader":
            return DataLoader(_dataset(), batch_size=2, shuffle=True, generator=torch.Generator())
        if kind == "global_rng_collate":
            return TorchDataLoader(_dataset(), batch_size=2, collate_fn=_noisy_collate)
        return ToyStream(_dataset())

    def run(out, model_seed, loss_fn, resume=None):
        trainer = Trainer(_model(model_seed, dropout=0.2), loss_fn, _config(out),
                          pass_generator=True)
        trainer.fit(data(), resume=resume)
        return trainer

    straight = run(tmp_path / "a", 0, _noisy_loss)
    with pytest.raises(RuntimeError, match="crash"):  # 5 batches/epoch: dies in epoch 1
        run(tmp_path / "b", 0, _crashing(6, RuntimeError("crash")))
    steps = [s for s, _ in Trainer(_model(), _mse, _config(tmp_path / "b")).checkpoints
             .checkpoints()]
    assert steps == [4, 6]  # periodic at 4, plus the one written on the way out at 6
    resumed = run(tmp_path / "b", 1, _noisy_loss, resume="latest")
    from_four = run(tmp_path / "c", 2, _noisy_loss,
                    resume=tmp_path / "b" / "checkpoints" / "ckpt_00000004.pt")
    for other in (resumed, from_four):
        assert other.step == straight.step == 10
        for mine, theirs in ((other.model, straight.model), (other.ema, straight.ema)):
            for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(),
                            strict=True):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(resumed.generator.get_state(), straight.generator.get_state())


def test_nan_and_inf_steps_are_skipped_and_counted(tmp_path):
    calls = [0]

    def loss_fn(model, batch):
        calls[0] += 1
        loss = _mse(model, batch)
        if calls[0] in (3, 5):
            return loss * float("nan")
        if calls[0] == 4:  # finite loss, infinite gradient: d sqrt(u)/du at u = 0
            w = model[1].weight
            return loss + torch.sqrt(w - w.detach()).sum()
        return loss

    trainer = Trainer(_model(), loss_fn, _config(tmp_path, max_steps=6, grad_clip=None))
    result = trainer.fit(ToyStream(_dataset()))
    assert result.step == 6 and result.bad_steps == 3 and calls[0] == 9
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    bad = [r for r in records if r["event"] == "bad_step"]
    assert [(r["step"], r["reason"]) for r in bad] == [
        (2, "non-finite loss"), (2, "non-finite gradient"), (2, "non-finite loss")]
    assert [r["consecutive"] for r in bad] == [1, 2, 3]


def test_persistent_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    calls, seen = [0], {}

    def loss_fn(model, batch):
        calls[0] += 1
        if calls[0] == 5:
            seen["weights"] = {k: v.clone() for k, v in model.state_dict().items()}
        loss = _mse(model, batch)
        return loss * float("nan") if calls[0] > 5 else loss

    trainer = Trainer(_model(), loss_fn, _config(tmp_path, max_bad_steps=3))
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps") as info:
        trainer.fit(ToyStream(_dataset()))
    assert "ckpt_00000004.pt" in str(info.value)
    assert trainer.step == 5 and trainer.bad_steps == 3
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["ckpt_00000004.pt"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / files[0])
    for k, v in seen["weights"].items():
        torch.testing.assert_close(ckpt["model"][k], v)
    # Weights that are themselves non-finite are never written over a good checkpoint.
    before = (tmp_path / "checkpoints" / files[0]).read_bytes()
    trainer.step = 4
    with torch.no_grad():
        trainer.model[1].weight.fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="not finite"):
        trainer.save_checkpoint()
    assert (tmp_path / "checkpoints" / files[0]).read_bytes() == before


def test_keyboard_interrupt_saves_and_resumes(tmp_path):
    with pytest.raises(KeyboardInterrupt):  # raised inside the loss: step 5 is rolled back
        Trainer(_model(dropout=0.2), _crashing(4, KeyboardInterrupt()),
                _config(tmp_path / "a", checkpoint_every=None), pass_generator=True
                ).fit(ToyStream(_dataset()))
    assert sorted(os.listdir(tmp_path / "a" / "checkpoints")) == ["ckpt_00000004.pt"]
    resumed = Trainer(_model(3, dropout=0.2), _noisy_loss, _config(tmp_path / "a"),
                      pass_generator=True)
    resumed.fit(ToyStream(_dataset()), resume="latest")
    straight = Trainer(_model(dropout=0.2), _noisy_loss, _config(tmp_path / "b"),
                       pass_generator=True)
    straight.fit(ToyStream(_dataset()))
    torch.testing.assert_close(resumed.model[1].weight, straight.model[1].weight)


def test_sigint_finishes_the_step_then_saves(tmp_path):
    calls = [0]

    def loss_fn(model, batch):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return _mse(model, batch)

    handler = signal.getsignal(signal.SIGINT)
    trainer = Trainer(_model(), loss_fn, _config(tmp_path, checkpoint_every=None))
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(ToyStream(_dataset()))
    assert trainer.step == 3 and calls[0] == 3
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["ckpt_00000003.pt"]
    assert signal.getsignal(signal.SIGINT) is handler


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="lr must be positive"):
        TrainerConfig(lr=0.0)
    with pytest.raises(ValueError, match="Unknown TrainerConfig fields"):
        TrainerConfig.from_dict({"learning_rate": 1.0})
    assert TrainerConfig.from_dict(TrainerConfig().to_dict()) == TrainerConfig()
    with pytest.raises(ValueError, match="model_config"):
        Trainer(_model(), _mse, _config(tmp_path), model_config={"a": object()})
    trainer = Trainer(_model(), lambda m, b: m(b.x), _config(tmp_path))
    with pytest.raises(ValueError, match="No training data"):
        trainer.fit()
    with pytest.raises(ValueError, match="scalar tensor"):
        trainer.fit(ToyStream(_dataset()))
    with pytest.raises(ValueError, match="no batches"):
        Trainer(_model(), _mse, _config(tmp_path)).fit([])
    with pytest.raises(FileNotFoundError, match="No checkpoints"):
        Trainer(_model(), _mse, _config(tmp_path / "empty")).fit(ToyStream([]), resume="latest")
    fresh = Trainer(_model(), _mse, _config(tmp_path / "auto", max_steps=2))
    assert fresh.fit(ToyStream(_dataset()), resume="auto").step == 2


def test_unreplayable_loader_warns_and_batches_move(tmp_path):
    loader = DataLoader(_dataset(), batch_size=2, shuffle=True)  # no generator
    trainer = Trainer(_model(), _mse, _config(tmp_path, max_steps=1))
    with pytest.warns(UserWarning, match="no generator"):
        trainer.fit(loader)
    moved = move_to_device({"a": (torch.ones(1), [torch.zeros(1)]), "b": 3}, "cpu")
    assert isinstance(moved["a"], tuple) and moved["b"] == 3


def test_resume_replays_the_order_of_a_seeded_batch_sampler():
    # make_loader's SeededBatchSampler draws each epoch's order from (seed, epoch): a resumed
    # cursor must set the batch sampler's epoch, or it replays epoch 0's order.
    from pyg_infdiff.data import make_loader
    from pyg_infdiff.training.cursor import DataCursor

    data = [torch.tensor([float(i)]) for i in range(6)]

    def loader():
        return make_loader(data, lambda items, generator=None: torch.stack(items),
                           batch_size=2, shuffle=True, seed=3)

    def batches(cursor, data, n):
        return [cursor.next(data).view(-1).tolist() for _ in range(n)]

    full = batches(DataCursor(seed=0), loader(), 9)  # three epochs of three batches
    assert full[0:3] != full[3:6]  # the epochs really differ, so the check below can fail
    resumed = DataCursor(seed=0)
    resumed.seek(2, 1)
    assert batches(resumed, loader(), 2) == full[7:9]


def test_resume_refuses_another_model_config(tmp_path):
    # Same weights, other maths (e.g. a config saved before UNetConfig.pool existed, resumed by
    # a run that would pool differently): refused with the differing entries, never silent.
    saved = {"unet": {"radius": 0.1, "channel_mults": [1, 2]}, "data": {"rate": 4}}
    Trainer(_model(), _mse, _config(tmp_path, max_steps=4), model_config=saved).fit(
        ToyStream(_dataset()))
    same = {"unet": {"radius": 0.1, "channel_mults": (1, 2)}, "data": {"rate": 4}}
    trainer = Trainer(_model(), _mse, _config(tmp_path, max_steps=6), model_config=same)
    assert trainer.fit(ToyStream(_dataset()), resume="latest").step == 6  # tuple == list
    other = {"unet": {"radius": 0.1, "channel_mults": [1, 2], "pool": "tent"},
             "data": {"rate": 8}}
    trainer = Trainer(_model(), _mse, _config(tmp_path, max_steps=8), model_config=other)
    with pytest.raises(ValueError, match="another model_config") as info:
        trainer.fit(ToyStream(_dataset()), resume="latest")
    assert "data.rate: checkpoint 4, this run 8" in str(info.value)
    assert "unet.pool: checkpoint '<missing>', this run 'tent'" in str(info.value)
