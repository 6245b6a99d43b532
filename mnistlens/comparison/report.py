"""The architecture report: `docs/architectures.md`, written from a comparison's numbers.

`write_report` turns what `stats.compare_models` measured (plus, per model, how
faithful its explanations are) into a Markdown page: one row per model, the figures,
and observations computed from the numbers (where width stops paying, what depth and
regularization do, what convolution buys and for which digits, which differences are
significant by McNemar's test, how the maps differ). Nothing in it is written by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

from mnistlens.comparison.stats import best_dense_and_convolutional
from mnistlens.io import atomic_write

ALPHA = 0.05  # McNemar's test: a difference is "significant" below this p-value


def _pair(report: dict, a: str, b: str) -> dict | None:
    for pair in report["pairs"]:
        if {pair["a"], pair["b"]} == {a, b}:
            return pair
    return None


def _row(report: dict, name: str) -> dict | None:
    return next((m for m in report["models"] if m["name"] == name), None)


def _versus(report: dict, a: str, b: str) -> str:
    """'mlp-128 98.10% vs mlp-256 98.32% (+0.22 points, p = 0.04, significant)'."""
    ra, rb, pair = _row(report, a), _row(report, b), _pair(report, a, b)
    if ra is None or rb is None or pair is None:
        return ""
    diff = 100 * (rb["accuracy"] - ra["accuracy"])
    verdict = "significant" if pair["mcnemar_p"] < ALPHA else "not significant"
    return (
        f"`{a}` {ra['accuracy']:.2%} vs `{b}` {rb['accuracy']:.2%} ({diff:+.2f} points, "
        f"McNemar p = {pair['mcnemar_p']:.2g}, {verdict})"
    )


def observations(
    report: dict, faithfulness: dict | None = None, studies: dict | None = None
) -> list[str]:
    """Short findings, each computed from the report's numbers.

    studies: which compared models answer which question, as `series.STUDIES` names
    them ("width" and "depth": names in order; "regularization": (with, without) name
    pairs); a study whose models were not compared is skipped. What convolution buys is
    read from every report, from the models' weights.
    """
    names = [m["name"] for m in report["models"]]
    studies = studies or {}
    found = []
    widths = [n for n in studies.get("width", ()) if n in names]
    if len(widths) >= 2:
        steps = [_versus(report, a, b) for a, b in zip(widths, widths[1:], strict=False)]
        significant = [
            b
            for a, b in zip(widths, widths[1:], strict=False)
            if _pair(report, a, b)["mcnemar_p"] < ALPHA
            and _row(report, b)["accuracy"] > _row(report, a)["accuracy"]
        ]
        flat = [b for b in widths[1:] if b not in significant]
        if not flat:
            where = "every step pays"
        else:
            later = [b for b in significant if widths.index(b) > widths.index(flat[0])]
            where = f"the gain is not significant at {', '.join(f'`{b}`' for b in flat)}"
            where += (
                f" but is again at {', '.join(f'`{b}`' for b in later)}"
                if later
                else ", where width stops paying"
            )
        found.append(f"**Width** (one hidden layer): {'; '.join(steps)}. So {where}.")
    depth = [n for n in studies.get("depth", ()) if n in names]
    if len(depth) >= 2:
        steps = [_versus(report, a, b) for a, b in zip(depth, depth[1:], strict=False)]
        found.append(f"**Depth** (layers of 256): {'; '.join(steps)}.")
    for plain, noreg in studies.get("regularization", ()):
        if plain in names and noreg in names:
            gap_a = _row(report, plain)["train_test_gap"]
            gap_b = _row(report, noreg)["train_test_gap"]
            gaps = ""
            if gap_a is not None and gap_b is not None:
                gaps = (
                    f"; train-test gap {100 * gap_b:.2f} points without against "
                    f"{100 * gap_a:.2f} with"
                )
            found.append(
                f"**Regularization** (dropout + augmentation): {_versus(report, noreg, plain)}"
                f"{gaps}."
            )
    best = best_dense_and_convolutional(report)
    if best is not None:
        best_dense, best_conv = best
        fixed = sorted(
            range(10),
            key=lambda d: best_conv["per_digit"][d] - best_dense["per_digit"][d],
            reverse=True,
        )[:3]
        before, after = best_dense["per_digit"], best_conv["per_digit"]
        digits = ", ".join(f"{d} ({100 * before[d]:.1f}% -> {100 * after[d]:.1f}%)" for d in fixed)
        ratio = best_conv["parameters"] / best_dense["parameters"]
        found.append(
            f"**Convolution**: {_versus(report, best_dense['name'], best_conv['name'])}, with "
            f"{ratio:.2f}x the parameters; the digits it fixes most: {digits}."
        )
    significant = [
        p for p in report["pairs"] if p["mcnemar_p"] < ALPHA and abs(_index(names, p)) == 1
    ]
    found.append(
        f"**Significance**: of {len(names) - 1} neighbouring pairs in the series, "
        f"{len(significant)} differ significantly (McNemar p < {ALPHA}): "
        + (", ".join(f"`{p['a']}`/`{p['b']}`" for p in significant) or "none")
        + "."
    )
    if faithfulness:
        rows = [
            f"`{n}` IG {f['integrated_gradients']:.2f}, saliency {f['saliency']:.2f} "
            f"(random {f['random']:.2f})"
            for n, f in faithfulness.items()
        ]
        ratio = {n: f["integrated_gradients"] / f["random"] for n, f in faithfulness.items()}
        first, last = next(iter(ratio)), list(ratio)[-1]
        trend = "more" if ratio[last] < ratio[first] else "less"
        found.append(
            "**How the maps differ** (deletion AUC on the same test images, lower = more "
            f"faithful): {'; '.join(rows)}. Relative to the random ranking, integrated "
            f"gradients deletes the class in {ratio[first]:.2f} of random's area for "
            f"`{first}` and {ratio[last]:.2f} for `{last}`: its maps are {trend} faithful "
            "for the bigger model by this measure."
        )
    return found


def _index(names: list[str], pair: dict) -> int:
    return names.index(pair["b"]) - names.index(pair["a"])


def markdown(
    report: dict,
    figures: dict[str, str],
    command: str,
    questions: dict[str, str] | None = None,
    faithfulness: dict | None = None,
    studies: dict | None = None,
) -> str:
    """The whole page as Markdown; figures: title -> file name beside the page;
    questions, faithfulness and studies as for `observations`."""
    lines = [
        "# Why does one network beat another?",
        "",
        f"Written by `{command}` from its measured numbers; run it again to refresh.",
        f"All numbers on the {report['n_images']:,} MNIST test images.",
        "",
        "| model | what it shows | accuracy | 95% CI | parameters | train s | "
        "images/s | ECE | train-test gap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        lo, hi = m["accuracy_ci95"]
        gap = "" if m["train_test_gap"] is None else f"{100 * m['train_test_gap']:+.2f} pts"
        secs = "" if m["train_seconds"] is None else f"{m['train_seconds']:.0f}"
        speed = "" if m["images_per_second"] is None else f"{m['images_per_second']:,.0f}"
        lines.append(
            f"| `{m['name']}` | {(questions or {}).get(m['name'], '')} | {m['accuracy']:.2%} | "
            f"{lo:.2%}-{hi:.2%} | {m['parameters']:,} | {secs} | {speed} | {m['ece']:.4f} | "
            f"{gap} |"
        )
    lines += ["", "## Observations", ""]
    lines += [f"- {text}" for text in observations(report, faithfulness, studies)]
    lines += ["", "## Figures", ""]
    for title, name in figures.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    lines += [
        "The train-test gap is accuracy on the first 10,000 training images minus test "
        "accuracy. Training seconds are as recorded in each checkpoint and images/s is one "
        "timed pass: both were measured on a shared 2-core machine and move with its load. "
        "ECE: expected calibration error, 15 bins. McNemar: exact two-sided "
        "binomial test on the images exactly one of the two models gets right.",
        "",
    ]
    return "\n".join(lines)


def write_report(path: str | os.PathLike, text: str) -> Path:
    """Write the page atomically; returns its path."""
    return atomic_write(path, lambda f: f.write(text.encode()))
