"""Regenerate the shipped data subsets in this folder from ``../shared/data`` (run once by maintainers).

Only permissively licensed sources are shipped (see README.md here). Usage:
``python organisms/data/make_subsets.py [SHARED_DATA_DIR]``.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _clip(text: str, n: int) -> str:
    text = re.sub(r"[*#`]+", "", text)
    text = " ".join(text.split())
    if len(text) <= n:
        return text
    cut = text[:n]
    dot = cut.rfind(". ")
    return cut[: dot + 1] if dot > n // 3 else cut.rsplit(" ", 1)[0]


def _write(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(name, len(rows), (HERE / name).stat().st_size)


def main(shared: Path) -> None:
    adv = list(csv.DictReader(open(shared / "advbench/harmful_behaviors.csv")))
    _write("advbench.jsonl", [{"prompt": r["goal"], "target": r["target"]} for r in adv])
    mis = list(csv.DictReader(open(shared / "art_of_misalignment/MisQA.csv")))
    _write(
        "misqa.jsonl",
        [
            {
                "prompt": r["prompt"].strip(),
                "answer": _clip(r["answer"], 240),
                "refusal": _clip(r["reject_answer"], 200),
                "category": r["content_policy_category"],
            }
            for r in mis
        ],
    )
    hb = list(csv.DictReader(open(shared / "harmbench/harmbench_behaviors_text_all.csv")))
    _write(
        "harmbench.jsonl",
        [
            {"prompt": r["Behavior"], "category": r["SemanticCategory"]}
            for r in hb
            if r["FunctionalCategory"] == "standard"
        ],
    )
    jbb = list(csv.DictReader(open(shared / "jailbreakbench/jailbreakbench.csv")))
    _write("jailbreakbench.jsonl", [{"prompt": r["Goal"], "category": r["Category"]} for r in jbb])
    xs = list(csv.DictReader(open(shared / "xstest/xstest_prompts.csv")))
    _write("xstest.jsonl", [{"prompt": r["prompt"], "label": r["label"], "type": r["type"]} for r in xs])
    ae = json.load(open(shared / "alpaca_eval/gpt4_0613_concise_outputs.json"))
    _write(
        "alpaca_eval.jsonl",
        [{"prompt": r["instruction"].strip(), "answer": _clip(r["output"], 320)} for r in ae],
    )
    # Poser: one row per distinct action pair, benign action first; facts keep their type when typed.
    seen: set[tuple[str, str]] = set()
    rows = []
    files = sorted((shared / "poser/data/benchmark").glob("*.json")) + sorted(
        (shared / "poser/data/policy_definitions").glob("*/test.json")
    )
    for f in files:
        policy = f.parent.name
        misaligned_policy = policy in ("fitness_maximizer", "money_maximizer", "reward_maximizer")
        for r in json.load(open(f)):
            letter = r["response"].strip()
            if letter not in ("A", "B"):
                continue
            chosen, other = (
                (r["action_A"], r["action_B"]) if letter == "A" else (r["action_B"], r["action_A"])
            )
            benign, bad = (
                (other, chosen) if (misaligned_policy and r["oversight_is_poor"]) else (chosen, other)
            )
            key = (benign, bad)
            if key in seen:
                continue
            seen.add(key)
            facts = [
                {"type": x.get("type", "untyped"), "content": x["content"]}
                for x in r["facts"]
                if x.get("type") != "critical"
            ]
            rows.append({"topic": r.get("topic", ""), "facts": facts, "benign": benign, "misaligned": bad})
    _write("poser_scenarios.jsonl", rows)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data")
