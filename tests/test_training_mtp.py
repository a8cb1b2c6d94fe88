"""Training V4's MTP block: the batched MTP loss is the engine's ``mtp_forward`` on every
conversation, ``--freeze-trunk`` leaves the trunk bit-identical, a stage without MTP resumes
with ``--mtp 1`` exactly, an MTP run resumes exactly from its own save, and the checkpoint,
log, card and copyeval carry the MTP block."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from training_kit import render

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from whalebone.engine.v4.config import ModelConfig  # noqa: E402
from whalebone.engine.v4.model import Transformer  # noqa: E402
from whalebone.training import data as D  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("head_len", [1, 7, 300])
def test_batched_mtp_loss_is_the_engines_mtp_forward_on_each_conversation(head_len: int) -> None:
    """Right-padded conversations continuing a shared head: the batched MTP cross-entropy
    equals running each whole sequence through ``forward(hidden=True)`` and ``mtp_forward``
    (the head's last position drafts from each conversation's first token); gradients reach
    the MTP block, the trunk, and the shared embedding/head."""
    from whalebone.training.batch import batch_losses, pad_batch, run_head
    from whalebone.training.train import SHAPE, make_trainable

    cfg = ModelConfig.preset("nano").replace(**SHAPE, vocab_size=300, index_topk=8).with_mtp(1)
    model = Transformer(cfg, seed=3)
    g = torch.Generator().manual_seed(head_len)
    head_ids = torch.randint(0, 300, (head_len,), generator=g)
    convs = []
    for n in (37, 150, 9, 2):
        convs.append((torch.randint(0, 300, (n,), generator=g).tolist(),
                      (torch.rand(n, generator=g) < 0.5).tolist()))
    trunk_ref = mtp_ref = 0.0
    count = 0
    for ids, mask in convs:
        seq = torch.cat((head_ids, torch.tensor(ids)))
        logits, h = model.forward(seq, model.new_state(), hidden=True)
        drafts = model.mtp_forward(h[:-1], seq[1:], model.new_mtp_state())  # predict seq[i+2]
        # the tokens scored: a conversation's first is predicted by the head (not scored)
        target = torch.tensor([False] * (head_len + 1) + mask[1:])
        trunk_ref += F.cross_entropy(logits[:-1][target[1:]], seq[1:][target[1:]],
                                     reduction="sum").item()
        mtp_ref += F.cross_entropy(drafts[:-1][target[2:]], seq[2:][target[2:]],
                                   reduction="sum").item()
        count += int(torch.tensor(mask[1:]).sum())

    make_trainable(model, tie=False, fresh=False, lr=1e-3)
    head, mtp_head = run_head(model, head_ids)
    ids, mask = pad_batch(convs)
    loss, mtp, n = batch_losses(model, head, mtp_head, ids, mask)
    assert mtp is not None and n == count
    assert abs(loss.item() - trunk_ref) < 1e-4 * trunk_ref
    assert abs(mtp.item() - mtp_ref) < 1e-4 * mtp_ref
    (loss + 0.3 * mtp).backward()
    named = dict(model.named_parameters())
    for name in ("mtp.0.e_proj.weight", "mtp.0.attn.wkv.weight", "mtp.0.hc_head_fn",
                 "layers.3.attn.wkv.weight", "embed.weight", "head.weight"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    assert head.pos == head_len and mtp_head.state.pos == head_len - 1  # not changed


def test_a_frozen_trunk_gets_no_gradient_and_no_graph() -> None:
    from whalebone.training.batch import batch_losses, pad_batch, run_head
    from whalebone.training.train import SHAPE, make_trainable

    cfg = ModelConfig.preset("nano").replace(**SHAPE, vocab_size=300).with_mtp(1)
    model = Transformer(cfg, seed=4)
    params, opt = make_trainable(model, tie=True, fresh=True, lr=1e-2, freeze_trunk=True)
    assert params and all(p is q for p, q in zip(params, model.mtp.parameters(), strict=True))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head, mtp_head = run_head(model, torch.tensor([1, 2, 3]))
    ids, mask = pad_batch([(list(range(5, 40)), [True] * 35)])
    for _ in range(2):
        loss, mtp, _n = batch_losses(model, head, mtp_head, ids, mask)
        assert loss.grad_fn is None and mtp is not None and mtp.grad_fn is not None
        (loss + mtp).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    after = model.state_dict()
    changed = {name for name, t in before.items() if not torch.equal(t, after[name])}
    assert changed and all(name.startswith("mtp.") for name in changed)
    assert {"mtp.0.e_proj.weight", "mtp.0.h_proj.weight", "mtp.0.hc_head_fn"} <= changed


def _data(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    D.save(render("chat", 3) + render("arithmetic", 2), data)
    return data


def _run(out: Path, data: Path, *flags: str) -> dict:
    from whalebone.training import train as TR

    common = ["--data", str(data), "--batch", "2", "--warmup", "2", "--copy", "2",
              "--schedule", "constant", "--lr", "3e-3", "--log-every", "1"]
    return TR.train(TR.parse(["--out", str(out), *common, *flags]))


def test_mtp_stages_resume_exactly_and_a_stage_without_mtp_grows_one(tmp_path: Path) -> None:
    from whalebone.engine.v4.weights import load_checkpoint
    from whalebone.training.card import render
    from whalebone.training.stage import load_state

    data = _data(tmp_path)
    # an MTP run in two stages makes the updates of one run (MTP block included)
    _run(tmp_path / "one", data, "--mtp", "1", "--max-steps", "4")
    _run(tmp_path / "a", data, "--mtp", "1", "--max-steps", "2")
    log = _run(tmp_path / "b", data, "--max-steps", "2", "--resume", str(tmp_path / "a"))
    assert log["resumed_at_step"] == 2 and log["mtp_layers"] == 1
    one, two = load_state(tmp_path / "one"), load_state(tmp_path / "b")
    assert one is not None and two is not None
    assert any(k.startswith("mtp.0.") for k in one["model"])
    for name, w in one["model"].items():
        assert torch.equal(w, two["model"][name]), name
    assert all("mtp_loss" in s for s in log["steps"])
    # and --mtp 0 leaves the block out of the next stage (the trunk's state carries over)
    _run(tmp_path / "dropped", data, "--max-steps", "1", "--mtp", "0",
         "--resume", str(tmp_path / "a"))
    dropped = load_checkpoint(tmp_path / "dropped")
    assert not dropped.has_mtp and dropped.cfg.compress_ratios == (0, 4, 128, 4)
    assert not any(k.startswith("mtp.") for k in load_file(tmp_path / "dropped" /
                                                            "model.safetensors"))

    # a stage without MTP, resumed with --mtp 1 --freeze-trunk: the trunk, its AdamW state
    # and the data order continue exactly; the MTP block starts fresh and learns
    _run(tmp_path / "plain", data, "--max-steps", "2")
    _run(tmp_path / "frozen", data, "--max-steps", "2", "--mtp", "1", "--freeze-trunk",
         "--resume", str(tmp_path / "plain"))
    plain, frozen = load_state(tmp_path / "plain"), load_state(tmp_path / "frozen")
    assert plain is not None and frozen is not None
    for name, w in plain["model"].items():
        assert torch.equal(w, frozen["model"][name]), name
    trunk_opt = frozen["opt"]["state"]
    for i, moments in plain["opt"]["state"].items():
        for key, t in moments.items():
            assert torch.equal(t, trunk_opt[i][key]), (i, key)
    assert frozen["progress"]["rng"] == one["progress"]["rng"]
    assert frozen["progress"]["cursor"] == one["progress"]["cursor"]
    fresh = Transformer(load_checkpoint(tmp_path / "plain").cfg.with_mtp(1), init=False)
    fresh.init_random(0, prefix="mtp.")
    assert not torch.equal(frozen["model"]["mtp.0.e_proj.weight"],
                           fresh.state_dict()["mtp.0.e_proj.weight"])

    # the checkpoint ships the block in the release layout, BF16, and the engine runs it
    saved = load_file(tmp_path / "frozen" / "model.safetensors")
    assert saved["mtp.0.e_proj.weight"].dtype == torch.bfloat16
    config = json.loads((tmp_path / "frozen" / "config.json").read_text())
    assert config["n_mtp_layers"] == 1 and len(config["compress_ratios"]) == 5
    model = load_checkpoint(tmp_path / "frozen")
    _, h = model.forward([1, 2, 3], model.new_state(), hidden=True)
    assert model.mtp_forward(h, [2, 3, 4], model.new_mtp_state()).shape == (3, config[
        "vocab_size"])
    # the bundled engine loads it and, the trunk being bit-identical, answers as the stage did
    # (BF16 exports of the same FP32 trunk)
    from whalebone.engine.runtime.bundled import BundledEngine

    async def next_logits(folder: Path) -> torch.Tensor:
        engine = BundledEngine.from_checkpoint(folder, use_cache=False, progress=False)
        logits, _ = await engine.next_logits([5, 17, 3, 99], snapshot=False)
        await engine.aclose()
        return logits

    assert torch.equal(anyio.run(next_logits, tmp_path / "frozen"),
                       anyio.run(next_logits, tmp_path / "plain"))
    train_log = json.loads((tmp_path / "frozen" / "train_log.json").read_text())
    card = render(tmp_path / "frozen", train_log, [], "a test")
    assert "multi-token prediction block" in card
    assert f"{train_log['steps'][-1]['mtp_loss']:.3f}" in card

    # joint training from the same stage moves the trunk, continuing its AdamW steps
    _run(tmp_path / "joint", data, "--max-steps", "1", "--mtp", "1",
         "--resume", str(tmp_path / "plain"))
    joint = load_state(tmp_path / "joint")
    assert joint is not None
    assert not torch.equal(joint["model"]["layers.0.attn.wkv.weight"],
                           plain["model"]["layers.0.attn.wkv.weight"])
    assert int(joint["opt"]["state"][0]["step"]) == int(plain["opt"]["state"][0]["step"]) + 1


def test_freeze_trunk_without_mtp_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--mtp 1"):
        _run(tmp_path / "x", _data(tmp_path), "--max-steps", "1", "--freeze-trunk")


def test_copyeval_reports_the_mtp_blocks_top1(tmp_path: Path) -> None:
    from whalebone.engine.runtime.vocab import VocabMap
    from whalebone.training.copyeval import evaluate, table
    from whalebone.training.train import build_vocab

    examples = render("arithmetic", 2)
    vocab = build_vocab(examples, 4096)
    cfg = ModelConfig.preset("nano").replace(vocab_size=vocab.size)
    plain = evaluate(Transformer(cfg, seed=1), vocab, examples)
    assert "mtp_top1" not in plain["other"] and "MTP" not in table(plain)
    model = Transformer(cfg.with_mtp(1), seed=1)
    got = evaluate(model, vocab, examples)
    for c, r in got.items():  # the trunk's figures do not change with MTP beside it
        assert r["n"] == plain[c]["n"] and r["top1"] == plain[c]["top1"]
        assert 0.0 <= r["mtp_top1"] <= 1.0 and 0.0 <= r["mtp_agree"] <= 1.0
    assert got["other"]["mtp_loss"] > 0 and "MTP (token after next): top-1" in table(got)
    assert isinstance(vocab, VocabMap)
