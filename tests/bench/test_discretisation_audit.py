"""Smoke test of bench/discretisation_audit.py (issue 12, item 2): the ``--smoke`` configuration
(2 noise fields, 8 images, seconds) writes its table into a temporary copy of the concepts page,
and the measurements say what the audit claims of them."""

import pytest
import torch
from _publish import read_section
from bench_scripts import load_script

audit = load_script("discretisation_audit")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from pyg_infdiff.data import FashionMNIST

    try:
        FashionMNIST(train=False)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    doc = tmp_path_factory.mktemp("audit") / "concepts.md"
    doc.write_text("# Concepts\n\nbefore\n\n<!-- bench:audit -->\nold\n<!-- /bench:audit -->\n\n"
                   "after\n")
    return audit.main(["--smoke", "--write", "--doc", str(doc)]), doc


def test_audit_writes_its_section(smoke):
    result, doc = smoke
    body = read_section("audit", doc)
    text = doc.read_text()
    assert "before" in text and "after" in text and "\nold\n" not in text
    assert body.startswith("| place | what changes with the discretisation | measured effect |")
    assert len(result["size"]) == 2 and result["size"]["fields"] == 2
    table = [line for line in body.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(audit.rows(result))
    assert all(line.count(" | ") == 3 for line in table)  # no stray pipe inside a cell
    assert "Command: `python bench/discretisation_audit.py --smoke --write --doc" in body


def test_audit_measurements(smoke):
    result, _ = smoke
    k = result["kernel"]
    names = list(k)
    train, context = k[names[0]], k[names[-1]]
    # more nodes per ball on finer lattices; the context keeps the training count
    balls = [k[f"full {n}²"]["ball"] for n in (28, 56, 112)]
    assert balls == sorted(balls) and balls[0] > 3 * train["ball"]
    assert abs(context["ball"] - train["ball"]) < 1.0
    # lone nodes (only themselves in the ball): none on a full lattice, a few on sparse sets
    assert k["full 28²"]["alone"] == 0.0 and 0.0 <= context["alone"] < 0.1
    # the full 112² lattice averages more: a smaller spread than on the training nodes
    assert k["full 112²"]["rms"] < 0.85 * train["rms"]
    q = result["quadrature"]
    assert q["context"] < 1e-5 < q["Tε (σ = ½ px)"][1] < q["Tε (σ = ½ px)"][0]
    assert 0.0 < q["above_nyquist"] < 0.2
    assert result["idw"]["idw"] > result["idw"]["tent"]
    b = result["border"]
    assert b["interior"] < 1e-6 and 0.0 < b["border"] <= b["bound"]
    n = result["noise"]
    assert abs(n["full 112²"][0] - 1.0) < 0.02 and n["full 112²"][1] > n["full 28²"][1]
    assert 0.05 < n["band"][0] < 0.1  # 1 - (27/28)² of uniform points
    loss = result["loss"]
    assert loss["nodes"] == [784, 196] and loss["share"] > 0.7
    assert 0.3 < loss["per_graph_share"] < 0.7
    m = result["metric"]["mollified"]
    assert m[56]["mean"] > m[112]["mean"] > 30.0


def test_shared_points():
    # 3x refinements: coarse pixel i is fine pixel 3 i + 1, at the same centre
    from pyg_infdiff.graph import lattice

    fine = lattice((6, 6)).repeat(2, 1)
    shared = audit._shared(fine, 2, 6, 3)
    torch.testing.assert_close(shared, lattice((2, 2)).repeat(2, 1))
