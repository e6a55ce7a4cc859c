import gc
import os
import socket
import sys
from datetime import timedelta

import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pyg_infdiff.data import GraphCollator, make_loader
from pyg_infdiff.training import (
    Trainer,
    TrainerConfig,
    barrier,
    cleanup_distributed,
    distributed_sampler,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    load_checkpoint,
    unwrap_model,
    wrap_ddp,
)

NAN_CALL = 3  # the call at which one process (rank 1, or the single process) returns NaN


def _dataset() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-1.0], [2.0], [0.5]]) + 0.1 * torch.randn(16, 1, generator=gen)
    return TensorDataset(x, y)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def _config(out_dir: str) -> TrainerConfig:
    return TrainerConfig(lr=0.05, warmup_steps=2, max_steps=6, ema_decay=0.5, log_every=2,
                         checkpoint_every=3, sample_every=None, out_dir=out_dir, device="cpu",
                         progress=False, verbose=False, plot_loss=False)


def _loss_with_nan(nan_rank: int):
    calls = [0]

    def loss_fn(model, batch):
        calls[0] += 1
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        if calls[0] == NAN_CALL and get_rank() == nan_rank:
            return loss * float("nan")
        return loss

    return loss_fn


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    if sys.platform == "linux":
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    ctx = init_distributed("gloo", timeout=timedelta(seconds=120))  # fail, never hang
    assert (ctx.rank, ctx.world_size, ctx.backend) == (rank, world_size, "gloo")
    assert get_world_size() == world_size and is_main_process() == (rank == 0)
    dataset = _dataset()
    sampler = distributed_sampler(dataset, shuffle=True, seed=3)
    assert isinstance(sampler, DistributedSampler) and sampler.num_replicas == world_size
    loader = DataLoader(dataset, batch_size=2, sampler=sampler)
    graphs = make_loader(torch.zeros(8, 1, 4, 4), GraphCollator(), batch_size=2)
    assert (graphs.batch_sampler.num_replicas, graphs.batch_sampler.rank) == (world_size, rank)
    trainer = Trainer(_model(), _loss_with_nan(nan_rank=1), _config(out_dir))
    assert isinstance(trainer.ddp_model, nn.parallel.DistributedDataParallel)
    result = trainer.fit(loader)
    assert result.bad_steps == 1 and result.step == 6
    assert (result.checkpoint is not None) == (rank == 0)
    weights = [p.detach().clone() for p in trainer.model.parameters()]
    gathered = [[torch.zeros_like(w) for w in weights] for _ in range(world_size)]
    for i, w in enumerate(weights):
        torch.distributed.all_gather([g[i] for g in gathered], w)
    for other in gathered[1:]:  # every process holds the same weights
        for a, b in zip(gathered[0], other, strict=True):
            assert torch.equal(a, b)
    # Release the DDP wrapper (its reducer holds the process group) before destroying the
    # group, so no gloo work object outlives it into interpreter shutdown.
    del trainer
    gc.collect()
    barrier()
    cleanup_distributed()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_single_process_helpers(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("gloo")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)
    assert get_rank() == 0 and get_world_size() == 1 and is_main_process()
    barrier()
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, "cpu") is model and unwrap_model(model) is model
    sampler = distributed_sampler(list(range(5)), shuffle=False)
    assert list(sampler) == [0, 1, 2, 3, 4]
    monkeypatch.setenv("WORLD_SIZE", "two")
    try:
        init_distributed()
    except ValueError as err:
        assert "WORLD_SIZE='two'" in str(err)
    else:
        raise AssertionError("expected a ValueError")


def test_ddp_two_processes_match_one_process_with_double_batch(tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    ddp = load_checkpoint(out / "checkpoints" / "ckpt_00000006.pt")
    assert len(ddp["rng"]) == 2 and ddp["world_size"] == 2
    assert ddp["bad_steps"] == 1

    dataset = _dataset()  # one process, the same global batches: the union of both shards
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3)
    single = Trainer(_model(), _loss_with_nan(nan_rank=0), _config(str(tmp_path / "single")))
    result = single.fit(DataLoader(dataset, batch_size=4, sampler=sampler))
    assert result.bad_steps == 1 and result.epoch == 1
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-5, atol=1e-6)
    for key, value in single.ema.state_dict().items():
        torch.testing.assert_close(ddp["ema"][key], value, rtol=1e-5, atol=1e-6)
    # Only rank 0 wrote files: one log with one start record.
    starts = [line for line in (out / "log.jsonl").read_text().splitlines() if '"start"' in line]
    assert len(starts) == 1
