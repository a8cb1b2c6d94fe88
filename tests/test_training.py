"""whalebone-nano: the data is what the runtime renders, the split holds, training lowers the
loss, and the shipped checkpoint loads and answers through the real agent loop."""

from __future__ import annotations

import argparse
import importlib.util
import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from training_kit import render

torch = pytest.importorskip("torch")

from whalebone.dsml import tokens as T  # noqa: E402
from whalebone.dsml.tokenizer import load_tokenizer  # noqa: E402
from whalebone.training import data as D  # noqa: E402
from whalebone.training.audit import held_out_cases, policy, request_of  # noqa: E402
from whalebone.training.tasks import FAMILIES, TRAIN_FAMILIES, make_tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _recorded_prompts(task: Any, tmp: Path) -> list[str]:
    """The prompts the real loop sends for ``task`` when the engine answers like the oracle."""
    from whalebone.agent.agent import Agent
    from whalebone.agent.config import AgentConfig
    from whalebone.agent.store import SessionStore
    from whalebone.engine.scripted import ScriptedEngine

    D.write_workspace(tmp, task.files)
    engine = ScriptedEngine([D.completion(s) for s in task.steps[0]])
    agent = Agent(engine, tools=D.nano_tools(tmp), store=SessionStore(tmp / "s.db"),
                  config=AgentConfig())

    async def main() -> None:
        async for _ in agent.stream(task.sessions[0]):
            pass

    anyio.run(main)
    return [r.prompt or "" for r in engine.requests]


@pytest.mark.parametrize("family", ["arithmetic", "read_file", "list_dir", "write_file"])
def test_training_text_is_byte_for_byte_what_the_agent_loop_renders(family: str,
                                                                    tmp_path: Path) -> None:
    task = make_tasks(family, 1, 5)[0]
    example = render(family, 1, 5)[0]
    prompts = _recorded_prompts(task, tmp_path)
    # Before each assistant piece, the text so far is the prompt the engine got (the date in
    # the user turn is redrawn in training data, so compare with it masked).
    text = example.head
    seen = 0
    for piece, mine in example.pieces:
        if mine:
            assert D._DATE.sub("D", text) == D._DATE.sub("D", prompts[seen])
            seen += 1
        text += piece
    assert seen == len(prompts) == len(task.steps[0])


def test_loss_covers_only_what_the_model_wrote() -> None:
    for ex in render("memory", 1) + render("auditor", 2):
        for piece, mine in ex.pieces:
            if mine:
                assert piece.endswith(T.EOS) and T.USER not in piece
            else:
                assert piece.startswith(T.USER) and T.EOS not in piece
                assert piece.endswith(T.THINK_START)  # thinking mode: the model starts there


def test_pieces_tokenize_as_the_whole_prompt_does() -> None:
    tok = load_tokenizer()
    for ex in render("read_file", 2) + render("auditor", 1):
        whole = tok.encode(ex.head + "".join(p for p, _ in ex.pieces))
        assert whole == tok.encode(ex.head) + [i for p, _ in ex.pieces for i in tok.encode(p)]


def test_memory_recall_happens_in_a_fresh_session_that_finds_the_stored_fact() -> None:
    remember, recall = render("memory", 1)
    assert "memory" in remember.head and remember.head == recall.head
    assert "File created successfully" in "".join(p for p, _ in remember.pieces)
    stored = "".join(p for p, _ in recall.pieces)
    assert "I will remember" not in stored  # the second session starts empty
    assert "match(es)" in stored


def test_echo_is_trained_on_but_not_scored_and_its_answer_is_the_users_text() -> None:
    assert "echo" in TRAIN_FAMILIES and "echo" not in FAMILIES
    for task, ex in zip(make_tasks("echo", 3, 3), render("echo", 3), strict=True):
        said = task.sessions[0]
        answer = ex.pieces[-1][0].split(T.THINK_END)[1].removesuffix(T.EOS)
        assert answer and said.endswith(answer)  # the whole answer is copied from the user
        assert answer in ex.pieces[0][0]


def test_held_out_tasks_never_reach_training() -> None:
    held = D.held_out_keys(20)
    train = [t for f in FAMILIES if f != "auditor" for t in make_tasks(f, 40, D.TRAIN_SEED)]
    assert any(D.task_key(t) in held for t in train)  # the filter has work to do (chat)
    built = D.build(40, held_out=20, families=("chat",))
    rendered = {ex.pieces[0][0].split(T.USER)[1].split("\n\n[today")[0] for ex in built}
    held_chat = {t.sessions[0] for t in make_tasks("chat", 20, D.HELD_OUT_SEED)}
    assert not rendered & held_chat
    with pytest.raises(D.DataError):
        D.build(1, seed=D.HELD_OUT_SEED)


def test_auditor_oracle_follows_the_bench_rule_on_every_shipped_case() -> None:
    path = ROOT / "bench" / "budget_eval.py"
    spec = importlib.util.spec_from_file_location("_budget_eval", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for case in held_out_cases():
        request = request_of(case)
        assert policy(request.facts)[0] == bench.rule(request.facts, request.max_step).decision


def test_a_few_training_steps_lower_the_loss(tmp_path: Path) -> None:
    from whalebone.engine.runtime.bundled import BundledEngine
    from whalebone.training import train as TR

    data = tmp_path / "data.jsonl"
    D.save(render("chat", 2) + render("arithmetic", 1), data)
    args = TR.parse(["--out", str(tmp_path / "ckpt"), "--data", str(data),
                     "--batch", "3", "--max-steps", "8", "--lr", "3e-3", "--warmup", "1",
                     "--log-every", "1", "--minutes", "5"])
    log = TR.train(args)
    losses = [s["loss"] for s in log["steps"]]
    assert losses[-1] < losses[0] * 0.8
    engine = BundledEngine.from_checkpoint(tmp_path / "ckpt", use_cache=False, progress=False)
    assert engine.vocab.size == engine.cfg.vocab_size
    # tied by default, saved in V4's layout as two equal matrices; resuming keeps them tied
    from whalebone.engine.v4.weights import load_checkpoint

    model = load_checkpoint(tmp_path / "ckpt")
    assert torch.equal(model.embed.weight, model.head.weight)
    again = TR.train(TR.parse(["--out", str(tmp_path / "more"), "--data", str(data),
                               "--batch", "2", "--max-steps", "2", "--warmup", "1",
                               "--resume", str(tmp_path / "ckpt")]))
    assert again["previous"]["final_step"] == 8
    more = load_checkpoint(tmp_path / "more")
    assert torch.equal(more.embed.weight, more.head.weight)
    assert not torch.equal(more.embed.weight, model.embed.weight)


def test_a_curriculum_trains_on_chosen_families_with_extra_examples_outside_the_vocab(
        tmp_path: Path) -> None:
    from whalebone.engine.runtime.vocab import VocabMap
    from whalebone.training import train as TR

    data, extra = tmp_path / "data.jsonl", tmp_path / "extra.jsonl"
    D.save(render("chat", 2) + render("arithmetic", 1), data)
    D.save(render("echo_easy", 2), extra)
    common = ["--data", str(data), "--batch", "2", "--max-steps", "1", "--warmup", "1"]
    plain = TR.train(TR.parse(["--out", str(tmp_path / "a"), *common]))
    log = TR.train(TR.parse(["--out", str(tmp_path / "b"), *common, "--extra", str(extra),
                             "--families", "echo_easy,chat"]))
    assert plain["examples"] == 3 and log["examples"] == 4
    # the vocabulary is the main data's, so either checkpoint can resume the other
    assert VocabMap.load(tmp_path / "a") == VocabMap.load(tmp_path / "b")
    with pytest.raises(SystemExit):
        TR.train(TR.parse(["--out", str(tmp_path / "c"), *common, "--families", "nope"]))


def test_train_command_rejects_bad_arguments() -> None:
    from whalebone.training import train as TR

    with pytest.raises(SystemExit):
        TR.parse(["--minutes", "3"])  # no --out
    assert isinstance(TR.parse(["--out", "x"]), argparse.Namespace)


@pytest.fixture(scope="module")
def shipped() -> Any:
    from whalebone.engine.runtime.bundled import BundledEngine

    return BundledEngine.default(use_cache=False, progress=False)


def test_shipped_checkpoint_loads_within_the_size_limit(shipped: Any) -> None:
    from whalebone.engine.runtime.bundled import CHECKPOINT_DIR

    size = sum(p.stat().st_size for p in CHECKPOINT_DIR.glob("*.safetensors"))
    assert size <= 25_000_000
    assert (CHECKPOINT_DIR / "MODEL_CARD.md").is_file()
    assert shipped.vocab.size == shipped.cfg.vocab_size < shipped.vocab.v4_vocab_size


def test_shipped_model_calls_the_calculator_on_a_held_out_question(shipped: Any,
                                                                  tmp_path: Path) -> None:
    from whalebone.engine.base import GenerationRequest

    task = make_tasks("arithmetic", 1, D.HELD_OUT_SEED)[0]
    prompt = _recorded_prompts(task, tmp_path)[0]

    async def greedy() -> str:
        done = await shipped.generate(GenerationRequest(prompt=prompt, max_tokens=80,
                                                        stop=[T.EOS]))
        return done.text

    text = anyio.run(greedy)
    assert T.THINK_END in text and '<｜DSML｜invoke name="calculator">' in text


def test_model_card_command_is_one_that_parses_back() -> None:
    from whalebone.training import train as TR
    from whalebone.training.card import _command

    cmd = _command({"out": "x", "lr": 0.003, "tie_embeddings": False, "batch": 16,
                    "minutes": 30.0, "resume": None})
    assert "--no-tie-embeddings" in cmd and "--lr 0.003" in cmd
    assert "--batch" not in cmd and "--minutes" not in cmd  # defaults are left out
    argv = cmd.strip("`").split()[3:]
    args = TR.parse(argv)
    assert args.tie_embeddings is False and args.lr == 0.003


def test_copy_probe_learns_a_fixed_distance_copy() -> None:
    """The training path carries gradient through attention: the nano shape learns to repeat a
    string at a fixed distance (the probe's easy task) in a few seconds."""
    import io

    from whalebone.training import probe

    seq, at = probe.batch("induction", 50, 8, torch.Generator().manual_seed(1))
    n = (seq.size(0) - 1 - at)
    assert seq[at - 1] == 1 and seq[-1] == 2 and torch.equal(seq[at - 1 - n:at - 1], seq[at:-1])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        log = probe.run("fixed", 12, 6, 150, lr=1e-2, log_every=50, out=io.StringIO())
    finally:
        torch.set_num_threads(threads)
    assert log[-1][1] < 0.4 * log[0][1]


def test_a_run_in_two_stages_ends_with_the_weights_of_one_run(tmp_path: Path) -> None:
    """resume.pt carries FP32 weights, AdamW's moments and the data order: 2 + 2 steps (with
    copy examples) make the same updates as 4 steps in one go."""
    from whalebone.training import train as TR
    from whalebone.training.stage import load_state

    data = tmp_path / "data.jsonl"
    D.save(render("chat", 3) + render("arithmetic", 2), data)
    common = ["--data", str(data), "--batch", "2", "--warmup", "2", "--copy", "2",
              "--schedule", "constant", "--lr", "3e-3"]
    TR.train(TR.parse(["--out", str(tmp_path / "one"), *common, "--max-steps", "4"]))
    TR.train(TR.parse(["--out", str(tmp_path / "a"), *common, "--max-steps", "2"]))
    log = TR.train(TR.parse(["--out", str(tmp_path / "b"), *common, "--max-steps", "2",
                             "--resume", str(tmp_path / "a")]))
    assert log["resumed_at_step"] == 2 and log["final_step"] == 4
    one, two = load_state(tmp_path / "one"), load_state(tmp_path / "b")
    assert one is not None and two is not None
    assert one["progress"]["tokens"] == two["progress"]["tokens"]
    for name, w in one["model"].items():
        assert w.dtype == torch.float32
        assert torch.equal(w, two["model"][name]), name
    # a resumed run that starts from the BF16 export alone is not the same run
    (tmp_path / "a" / "resume.pt").unlink()
    TR.train(TR.parse(["--out", str(tmp_path / "c"), *common, "--max-steps", "2",
                       "--resume", str(tmp_path / "a")]))
    three = load_state(tmp_path / "c")
    assert three is not None
    assert not torch.equal(three["model"]["embed.weight"], one["model"]["embed.weight"])


def test_a_next_stage_on_new_data_draws_a_new_order(tmp_path: Path) -> None:
    """A stage resumed on other data (a new render with fewer examples per group) must not
    follow the saved permutations, whose indices point past the new groups' ends."""
    from whalebone.training import train as TR

    big, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    D.save(render("chat", 4) + render("arithmetic", 3), big)
    D.save(render("chat", 1) + render("arithmetic", 1), small)
    common = ["--batch", "2", "--warmup", "1", "--schedule", "constant"]
    TR.train(TR.parse(["--out", str(tmp_path / "a"), "--data", str(big), *common,
                       "--max-steps", "3"]))
    log = TR.train(TR.parse(["--out", str(tmp_path / "b"), "--data", str(small), *common,
                             "--max-steps", "3", "--resume", str(tmp_path / "a")]))
    assert log["resumed_at_step"] == 3 and log["final_step"] == 6


@pytest.mark.parametrize("head_len", [0, 7, 300])
def test_a_padded_batch_gives_each_conversations_own_loss_and_gradient(head_len: int) -> None:
    """Right padding is exact (pads see nothing a real token sees, and get no loss), the
    indexer's top-k mask picks what the engine's gather picks, and query blocks past 128
    tokens match: the batched loss and gradients equal the per-conversation ones."""
    import torch.nn.functional as F

    from whalebone.engine.v4.config import ModelConfig
    from whalebone.engine.v4.model import Transformer
    from whalebone.training.batch import batch_loss, pad_batch
    from whalebone.training.train import SHAPE, make_trainable, train_forward

    cfg = ModelConfig.preset("nano").replace(**SHAPE, vocab_size=300, index_topk=8)
    model = Transformer(cfg, seed=3)
    params, opt = make_trainable(model, tie=True, fresh=True, lr=1e-3)
    g = torch.Generator().manual_seed(head_len)
    head = model.new_state()
    if head_len:
        with torch.no_grad():
            train_forward(model, torch.randint(0, 300, (head_len,), generator=g), head)
    convs = []
    for n in (37, 150, 9, 261):
        convs.append((torch.randint(0, 300, (n,), generator=g).tolist(),
                      (torch.rand(n, generator=g) < 0.5).tolist()))

    def grads() -> list[torch.Tensor]:
        out = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
        opt.zero_grad(set_to_none=True)
        return out

    ref, count = torch.zeros(()), 0
    for ids, mask in convs:
        x, target = torch.tensor(ids), torch.tensor(mask[1:])
        logits = train_forward(model, x, head.clone())
        ref = ref + F.cross_entropy(logits[:-1][target], x[1:][target], reduction="sum")
        count += int(target.sum())
    ref.backward()
    want = grads()
    ids, mask = pad_batch(convs)
    loss, n = batch_loss(model, head, ids, mask)
    loss.backward()
    got = grads()
    assert n == count and abs(loss.item() - ref.item()) < 1e-3 * ref.item()
    for a, b in zip(want, got, strict=True):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()) + 1e-7)
    assert head.pos == head_len  # the shared head state is not changed


def test_copy_examples_repeat_the_turn_in_the_agents_own_template() -> None:
    from whalebone.training.copying import copy_example

    rng = random.Random(5)
    examples = [copy_example(rng) for _ in range(200)]
    for ex in examples[:20]:
        (user, mine_u), (answer, mine_a) = ex.pieces
        assert ex.head == T.BOS and not mine_u and mine_a
        said = answer.split(T.THINK_END, 1)[1].removesuffix(T.EOS)
        assert said in user and user.startswith(T.USER)
    digits = [len(w) for ex in examples for w in ex.pieces[1][0].replace(",", " ")
              .replace(";", " ").split() if w.isdigit()]
    assert set(digits) == set(range(1, 10))  # every chunk length of the tokenizer's numbers


@pytest.mark.parametrize("iters", [1, 3, 20])
def test_the_hand_differentiated_sinkhorn_matches_autograd_through_the_engines(iters: int) -> None:
    from whalebone.engine.v4.hyper import sinkhorn_split as engine_split
    from whalebone.training.batch import sinkhorn_split

    hc = 4
    g = torch.Generator().manual_seed(iters)
    mixes = torch.randn(50, (2 + hc) * hc, generator=g).requires_grad_()
    scale = (torch.randn(3, generator=g) + 1).requires_grad_()
    base = torch.randn((2 + hc) * hc, generator=g).requires_grad_()
    weights = [torch.randn(50, hc, generator=g), torch.randn(50, hc, generator=g),
               torch.randn(50, hc, hc, generator=g)]

    def run(split: Any) -> tuple[Any, ...]:
        out = split(mixes, scale, base, hc, iters, 1e-6)
        loss = sum((o * w).sum() for o, w in zip(out, weights, strict=True))
        return (*out, *torch.autograd.grad(loss, [mixes, scale, base]))

    for want, got in zip(run(engine_split), run(sinkhorn_split), strict=True):
        assert torch.allclose(want, got, rtol=1e-5, atol=1e-6)


def test_copyeval_classes_copied_tokens_and_the_card_shows_them(tmp_path: Path) -> None:
    """A copied number, word and path are told apart from template words; the card renders
    the A/B table from copyeval's JSON."""
    from whalebone.training.card import copy_table
    from whalebone.training.copyeval import classify, token_class

    head_words = {"calculator", "file"}
    seen = {"4471", "notes/river.txt", "Carol", "calculator"}
    assert token_class("4471", seen, head_words) == "number"
    assert token_class("notes/river.txt", seen, head_words) == "path"
    assert token_class("Carol", seen, head_words) == "word"
    assert token_class("calculator", seen, head_words) == "other"  # a template word
    assert token_class("9999", seen, head_words) == "other"  # not in the prompt
    ex = D.Example("read_file", f"{T.BOS}read a file", [
        (f"{T.USER}What does notes/river.txt say? Code 4471{T.ASSISTANT}{T.THINK_START}", False),
        (f"Quote it.{T.THINK_END}It says 4471 in notes/river.txt{T.EOS}", True)])
    ids, classes = classify(ex, load_tokenizer())
    assert len(ids) == len(classes)
    mine = [c for c in classes if c is not None]
    assert {"number", "path", "other"} <= set(mine)
    result = {c: {"n": 3, "loss": 1.5, "top1": 0.5} for c in ("number", "word", "path", "other")}
    table = copy_table({"/x/base": result, "/x/copy8": result}, "A/B")
    assert "| copy8 | 1.50 / 50.0% |" in table and table.startswith("## A/B")
