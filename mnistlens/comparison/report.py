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

# the stress test's figures (`perturb.run`'s "plots") by the titles the page gives them
TOLERANCE_FIGURES = {
    "curves": "Accuracy as each change grows",
    "corruptions": "Accuracy on MNIST-C's corruptions",
    "causes": "The gap's images that normalizing fixes",
    "examples": "What each change does (the first test digits)",
}


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
            stress = report.get("stress")
            if stress:
                mca = {m["name"]: m["mean_corruption_accuracy"] for m in stress["models"]}
                if mca.get(plain) is not None and mca.get(noreg) is not None:
                    gaps += (
                        f"; mean MNIST-C accuracy {100 * mca[noreg]:.1f}% without against "
                        f"{100 * mca[plain]:.1f}% with"
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
        text = (
            f"**Convolution**: {_versus(report, best_dense['name'], best_conv['name'])}, with "
            f"{ratio:.2f}x the parameters; the digits it fixes most: {digits}."
        )
        stress = report.get("stress")
        if stress:
            text += " " + _tolerance_of(stress, best_dense["name"], best_conv["name"])
        found.append(text)
    if report.get("stress"):
        found.append(_robustness(report["stress"]))
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
            f"`{n}` IG {f['integrated_gradients']:.2f}, saliency {f['saliency']:.2f}"
            + (f", LRP {f['lrp']:.2f}" if "lrp" in f else "")
            + f" (random {f['random']:.2f})"
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


def _robustness(stress: dict) -> str:
    """Whether the most accurate model is also the most robust (MNIST-C's mean), and its
    three hardest corruptions."""
    rows = [m for m in stress["models"] if m["mean_corruption_accuracy"] is not None]
    if not rows:
        return ""
    best = max(stress["models"], key=lambda m: m["clean"])
    robust = sorted(rows, key=lambda m: -m["mean_corruption_accuracy"])
    corruptions = [t for t in stress["transforms"] if t["kind"] == "corruption"]
    hardest = sorted(corruptions, key=lambda t: stress["accuracy"][best["name"]][t["name"]][-1])
    worst = ", ".join(
        f"{t['name']} {stress['accuracy'][best['name']][t['name']][-1]:.1%}" for t in hardest[:3]
    )
    rank = [m["name"] for m in robust].index(best["name"]) + 1
    return (
        f"**Corruptions** (MNIST-C's mean): the most accurate model, `{best['name']}`, "
        f"ranks {rank} of {len(robust)} at {best['mean_corruption_accuracy']:.1%}; the most "
        f"robust is `{robust[0]['name']}` ({robust[0]['mean_corruption_accuracy']:.1%}). "
        f"`{best['name']}` is hurt most by {worst}."
    )


def _tolerance_of(stress: dict, a: str, b: str) -> str:
    """What the stress test says about B against A, for an observation."""
    pair = next((p for p in stress["pairs"] if (p["a"], p["b"]) == (a, b)), None)
    if pair is None or pair["transform"] is None:
        return ""
    at = _severity(_spec(stress, pair["transform"]), pair["severity"])
    text = (
        f"Changed digits widen the lead most under {pair['transform']} {at}: "
        f"`{b}` {_at(stress, b, pair['transform'], pair['severity']):.1%} against `{a}` "
        f"{_at(stress, a, pair['transform'], pair['severity']):.1%}"
    )
    causes = pair.get("causes")
    if causes and causes["largest"]:
        top = next(r for r in causes["factors"] if r["factor"] == causes["largest"])
        text += (
            f"; on the unchanged digits, normalizing {causes['largest']} fixes {top['fixed']} "
            f"of the {causes['n_gap']} images only `{b}` gets right ({top['net']} more than "
            "the opposite change of the same size)"
        )
    return text + " (see *What each architecture tolerates*)."


def _spec(stress: dict, transform: str) -> dict | None:
    """The stress table's entry of a transform (kind, unit, severities), None if not run."""
    return next((t for t in stress["transforms"] if t["name"] == transform), None)


def _at(stress: dict, model: str, transform: str, severity: float) -> float | None:
    """Accuracy of `model` under `transform` at `severity`, None if not measured."""
    spec = _spec(stress, transform)
    if spec is None or severity not in spec["severities"]:
        return None
    return stress["accuracy"][model][transform][spec["severities"].index(severity)]


def _severity(spec: dict, severity: float) -> str:
    """'4 px', '45 degrees', 'x0.6', 'at MNIST-C's setting'."""
    if spec["kind"] == "corruption":
        return "at MNIST-C's setting"
    if spec["unit"] == "factor":
        return f"x{severity:g}"
    return f"{severity:g} {spec['unit']}"


def _change(stress: dict, found: dict) -> str:
    """'translate 4 px (+23.90)': a transform at a severity and the gap there."""
    at = _severity(_spec(stress, found["transform"]), found["severity"])
    return f"{found['transform']} {at} ({100 * found['gap']:+.2f})"


def pair_sentence(stress: dict, pair: dict) -> str:
    """One pair's tolerance in one sentence, from its numbers: the clean gap, where it
    widens most, and the mean corruption accuracies."""
    a, b = pair["a"], pair["b"]
    text = f"`{a}` -> `{b}`: {100 * pair['clean_gap']:+.2f} points on the clean digits"
    if pair["transform"] is not None:
        text += f"; the gap grows most under {_change(stress, pair)}"
    narrowest = pair.get("narrowest", {})
    if narrowest.get("transform") is not None:
        text += f" and shrinks most under {_change(stress, narrowest)}"
    mca = {m["name"]: m["mean_corruption_accuracy"] for m in stress["models"]}
    if mca[a] is not None:
        text += f"; mean MNIST-C accuracy {mca[a]:.1%} -> {mca[b]:.1%}"
    return text + "."


def tolerance(stress: dict, figures: dict[str, str]) -> list[str]:
    """The section "What each architecture tolerates": a table of accuracy under each
    change at its hardest severity, a sentence per pair, the cause of the last pair's gap
    (the best dense model against the best convolutional one), and the figures (title
    -> file name beside the page)."""
    from mnistlens.perturb.causes import sentence

    sweeps = [t for t in stress["transforms"] if t["kind"] == "sweep"]
    corruptions = [t for t in stress["transforms"] if t["kind"] == "corruption"]
    heads = [f"{t['name']} {_severity(t, t['hardest'])}" for t in sweeps]
    lines = [
        "## What each architecture tolerates",
        "",
        f"Every one of the {stress['n_images']:,} test digits changed the same way (seed "
        f"{stress['seed']}, one direction or sign drawn per digit), and each model's accuracy "
        f"on them; MNIST-C's {len(corruptions)} corruptions (Mu & Gilmer 2019) at MNIST-C's "
        "own setting, averaged as the mean corruption accuracy.",
        "",
        "| model | clean | MNIST-C mean | " + " | ".join(heads) + " |",
        "|---|---|---|" + "---|" * len(heads),
    ]
    for m in stress["models"]:
        cells = [_at(stress, m["name"], t["name"], t["hardest"]) for t in sweeps]
        mca = m["mean_corruption_accuracy"]
        lines.append(
            f"| `{m['name']}` | {m['clean']:.2%} | {'' if mca is None else f'{mca:.1%}'} | "
            + " | ".join("" if c is None else f"{c:.1%}" for c in cells)
            + " |"
        )
    lines += ["", *[f"- {pair_sentence(stress, p)}" for p in stress["pairs"]], ""]
    if stress["pairs"] and "causes" in stress["pairs"][-1]:
        causes = stress["pairs"][-1]["causes"]
        lines += [
            f"**Why `{causes['b']}` beats `{causes['a']}`.** {sentence(causes)} "
            "(Normalizing: re-centring by the centre of mass, deslanting by the image "
            "moments, rescaling to MNIST's 20-pixel box, thinning or thickening the strokes "
            "to MNIST's median width; `mnistlens.perturb.causes`.)",
            "",
        ]
    for title, name in figures.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return lines


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
    if report.get("stress"):
        plots = report["stress"].get("plots", {})
        shown = {TOLERANCE_FIGURES[k]: Path(v).name for k, v in plots.items()}
        lines += tolerance(report["stress"], shown)
    return "\n".join(lines)


def write_report(path: str | os.PathLike, text: str) -> Path:
    """Write the page atomically; returns its path."""
    return atomic_write(path, lambda f: f.write(text.encode()))
