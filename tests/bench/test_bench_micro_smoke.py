"""Smoke tests of the micro-benchmarks (bench/data.py, noise.py, kernel_conv.py,
sparse_backends.py, edge_sum.py): each runs its ``--smoke`` configuration (the rows of the
published table on tiny inputs, seconds) end to end and writes its section into a temporary copy
of the docs. No timings are asserted: only that the scripts run, report what they promise and
that the numbers are sane (positive, finite; paths that compute the same thing agree)."""
import math
import sys
from pathlib import Path

import pytest
from _publish import read_section
from bench_scripts import load_script

from pyg_infdiff.nn import get_edge_sum_backend
from pyg_infdiff.nn._edge_sum import AUTO_MIN_ELEMENTS

data = load_script("data")
noise = load_script("noise")
kernel_conv = load_script("kernel_conv")
sparse_backends = load_script("sparse_backends")
edge_sum = load_script("edge_sum")
SCRIPTS = {"data": data, "noise": noise, "kernel_conv": kernel_conv,
           "sparse_backends": sparse_backends, "edge_sum": edge_sum}


def _run(script: str, tmp_path: Path, *extra: str) -> tuple[dict, Path, str]:
    doc = tmp_path / "benchmarks.md"
    argv = ["--smoke", "--write", "--doc", str(doc), *extra]
    result = SCRIPTS[script].main(argv)
    return result, doc, f"Command: `python bench/{script}.py --smoke --write --doc {doc}"


def _common_lines(body: str, command: str) -> None:
    assert command in body  # the arguments used, --smoke included: never a published number
    assert "Machine: " in body


def _positive(*values: float) -> None:
    assert values and all(math.isfinite(v) and v > 0 for v in values), values


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_cli(script, capsys):
    # CONTRIBUTING.md: every script has --smoke, --threads and --device (or says why not)
    with pytest.raises(SystemExit) as info:
        SCRIPTS[script].parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--smoke", "--threads", "--repeats", "--write", "--doc"):
        assert option in text, option
    assert "--device" in text
    if script in ("data", "sparse_backends", "edge_sum"):
        assert "CPU only" in text and "no --device" in text


def test_data_smoke(tmp_path):
    result, doc, command = _run("data", tmp_path)
    rows = result["rows"]
    expected = ["8²", "16²", "32²", "8²", "16²", "8²", "8²"]
    expected += ["28²", "16²"] if result["fashion"] else []
    assert [r["resolution"] for r in rows] == expected
    for r in rows:
        _positive(r["items_per_s"], r["ms_per_item"])
        assert r["ms_per_item"] == pytest.approx(1e3 / r["items_per_s"])
    body = read_section("data", doc)
    _common_lines(body, command)
    assert body.startswith(data.TITLE)
    assert "| case | resolution | items/s | ms/item |\n|---|---:|---:|---:|\n" in body
    assert "| `ContinuousShapes[i]` (render) | 32² | " in body
    assert "| `GraphCollator` (batch 4, rate 4) | 16² | " in body
    assert "| `make_loader` render + collate, 2 workers | 8² | " in body
    assert "16 items per pass" in body and "median of 1 repeats" in body
    assert ("| `FashionMNIST[i]` | 28² | " in body) == result["fashion"]
    assert ("Fashion-MNIST rows skipped" in body) != result["fashion"]


def test_noise_smoke(tmp_path):
    result, doc, command = _run("noise", tmp_path)
    assert result["size"] == 32 and result["device"] == "cpu"
    for b in (1, 4):
        _positive(*(result["ms"][b][key] for key in ("fast", "points", "naive", "mollify")))
    assert result["err"] < 1e-4  # the lattice fast path evaluates the same field as the naive one
    body = read_section("noise", doc)
    _common_lines(body, command)
    assert "| case | nodes per graph | B=1 (ms) | B=4 (ms) | vs naive (B=1 / B=4) |" in body
    assert "| `NoiseField.at` full lattice (separable matmuls + gather) | 1,024 | " in body
    assert "| `NoiseField.evaluate` irregular points | 256 | " in body
    assert "| `GaussianMollifier.apply` 3×32² images | 1,024 | " in body
    assert f"σ = 1/16 (K = {result['num_freq']} frequencies per axis" in body


def test_kernel_conv_smoke(tmp_path):
    result, doc, command = _run("kernel_conv", tmp_path)
    speed = result["speed"]
    assert list(speed) == [(16, 1), (16, 4), (16, 8), (32, 1), (32, 4), (32, 8)]
    for res in speed.values():
        _positive(*(res[k] for k in ("graph", "generic", "dense", "dense_full", "conv2d",
                                     "conv2d_cl")))
        assert res["edges"] > res["nodes"] > 0 and res["auto"] in ("graph", "dense")
        # the graph paths (tabulated and generic) compute the dense path's operator
        assert res["graph_vs_dense"] < 1e-4
    cross = result["crossover"]
    assert len(cross["rows"]) == 2 + len(kernel_conv.CROSSOVER_RADII_PX)
    assert set(cross["units"]) == {"direct", "fft", "graph"}
    _positive(*cross["units"].values())
    assert cross["max_rel_diff"] < 1e-4  # direct, FFT and graph agree with the same weights
    stats = result["convergence"]["stats"]
    assert set(stats) == {"window", "mean"}
    for s in stats.values():
        _positive(*s["coarse"], *s["fine"], *s["subsampled"])
        assert len(s["coarse"]) == 2
    body = read_section("operator", doc)
    _common_lines(body, command)
    assert "### Graph path vs dense path vs conv2d" in body
    assert "| lattice | nodes | edges | graph generic (ms) | graph (ms) | dense (ms) |" in body
    assert "| 16² / 4 | 64 | " in body and "| 32² / 8 | 128 | " in body
    assert "### Dense path: direct vs FFT (full 32², C = 8, fwd + bwd)" in body
    assert "| radius (px) | taps in box | direct (ms) | FFT (ms) | layer picks |" in body
    assert "| 1.5 | 9 | " in body and "| 16 | 1089 | " in body
    assert "| normalisation | 16²↔32² median (max) | 32²↔64² median (max) |" in body
    assert "| window | " in body and "| mean | " in body


def _sparse_rows(body: str) -> dict[str, list[str]]:
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| backend"):
            rows[cells[0]] = cells[1:]
    return rows


def _check_sparse(result: dict, body: str) -> dict[str, list[str]]:
    threads = result["threads"]
    assert result["size"] == 32 and result["num_edges"] > result["num_nodes"] == 256
    head = [f"scalar `A @ x`, {t} thr. (ms)" for t in threads]
    head += [f"depthwise `[E, C]` sum, {t} thr. (ms)" for t in threads]
    assert "| backend | " + " | ".join(head) + " |" in body
    for t in threads:
        _positive(*result["scalar"][t].values(), *result["depthwise"][t].values())
    rows = _sparse_rows(body)
    assert list(rows) == ["torch.sparse CSR", "torch.sparse COO", "index_add_", "PyG scatter",
                          "segment (CSR)", "torch_sparse.SparseTensor"]
    assert all(len(cells) == 2 * len(threads) for cells in rows.values())
    assert rows["torch.sparse CSR"][len(threads):] == ["n/a"] * len(threads)
    assert "256 nodes" in body and "(4× subsampled 32², radius 6 px, self loops), C = 8" in body
    return rows


def test_sparse_backends_smoke(tmp_path):
    # runs whether or not torch_sparse is installed: its row is measured or 'unavailable'
    result, doc, command = _run("sparse_backends", tmp_path)
    body = read_section("sparse_backends", doc)
    _common_lines(body, command)
    rows = _check_sparse(result, body)
    measured = result["torch_sparse"] is None
    for t in result["threads"]:
        assert ("torch_sparse.SparseTensor" in result["scalar"][t]) == measured
    assert ("unavailable" in rows["torch_sparse.SparseTensor"][0]) != measured
    assert ("SparseTensor vs torch.sparse CSR on scalar weights" in body) == measured


def test_sparse_backends_without_torch_sparse(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_sparse", None)  # as if not installed
    assert "not installed" in sparse_backends.torch_sparse_status()
    result, doc, command = _run("sparse_backends", tmp_path)
    body = read_section("sparse_backends", doc)
    _common_lines(body, command)
    rows = _check_sparse(result, body)
    assert rows["torch_sparse.SparseTensor"] == ["unavailable"] * 2 * len(result["threads"])
    assert "torch_sparse: unavailable: torch_sparse is not installed" in body


def test_edge_sum_smoke(tmp_path):
    result, doc, command = _run("edge_sum", tmp_path)
    assert set(result["sums"]) == {8}
    _positive(*result["sums"][8].values(), *result["steps"].values(), *result["collate"].values())
    assert set(result["steps"]) == {"(i)", "(iii)", "(iii) fused", "(iii) composition",
                                    "(iii), noise as a function", "(i) radius 2.5 px",
                                    "(iii) radius 2.5 px", "(iii) radius 2.5 px fused"}
    assert set(result["sums"][8]) == {"composition", "fused", "compiled"}
    assert set(result["collate"]) == {"(i)", "(iii)", "(i) radius 2.5 px", "(iii) radius 2.5 px"}
    assert set(result["noise"]) == {f"{arm} {how}" for arm in ("(i)", "(iii)")
                                    for how in ("function", "lattice")}
    _positive(*result["noise"].values())
    assert result["nodes"] == 256 and result["edges_per_graph"] > 0  # 32² renders, 4x
    body = read_section("edge_sum", doc)
    _common_lines(body, command)
    assert body.startswith(edge_sum.TITLE)
    assert ("| channels | composition | fused | compiled | fused vs composition | compiled vs "
            "fused |") in body
    assert f"compiled loops from {AUTO_MIN_ELEMENTS:,} edges × channels, here " in body
    assert "Goal (issue 13): a step of (iii)" in body
    assert "with the radius of 2.5 pixels in both arms: " in body
    assert "| arm | as a function | on the lattice | speed-up |" in body


def test_edge_sum_cases_compute_the_same_sum():
    import torch

    args = edge_sum.parse_args(["--smoke"])
    gen = torch.Generator().manual_seed(0)
    x, table = torch.randn(40, 3, generator=gen), torch.randn(6, 3, generator=gen)
    src, dst = torch.randint(0, 40, (300,), generator=gen), torch.randint(0, 30, (300,),
                                                                           generator=gen)
    tap = torch.randint(0, 6, (300,), generator=gen)
    expected = edge_sum.composed_edge_sum(x, table, src, dst, 30, tap=tap)
    before = get_edge_sum_backend()
    for backend in ("fused", "compiled"):
        with edge_sum.backend_of(backend):
            torch.testing.assert_close(edge_sum.edge_sum(x, table, src, dst, 30, tap=tap),
                                       expected)
    assert get_edge_sum_backend() == before  # restored
    assert args.rate == 4.0 and args.preset == "tiny"


def test_arm_of_a_step_case():
    assert edge_sum.arm_of("(iii) radius 2.5 px fused") == "(iii) radius 2.5 px"
    assert edge_sum.arm_of("(iii), noise as a function") == "(iii)"
    assert edge_sum.arm_of("(iii) composition") == edge_sum.arm_of("(iii)") == "(iii)"
