"""study.md, study.json and the pictures of a study, from the member records on disk; no figure is typed by hand.

The report holds: every cell with its seeds' results; each origin's mean with a bootstrap interval; searched
against random (difference, interval, Welch's t and p); each searched cell's percentile among the random cells;
the variance components of the random cells (seed against cell); each search's ranking of the random cells
against their stand-alone results (Kendall tau); whether the study answers its question (a win at p < 0.05, a
difference bounded to ± 4 points, or each searched cell placed within a quartile); the searches' diagnostics per
epoch and their agreement; and the members that failed, by name. A figure that needs more members than there
are shows "-".
"""
from __future__ import annotations

import json
from pathlib import Path

from yacs.config import CfgNode

from functions.plots import plot_search_diagnostics, plot_study
from functions.search_diagnostics import DIAGNOSTICS_FILE, mean_agreement, read_diagnostics
from functions.study_statistics import (
    DIFFERENCE_HALF_WIDTH, PERCENTILE_WIDTH, SIGNIFICANCE, compare_groups, group_summary, kendall_tau,
    percentile_interval, study_answer, variance_components,
)
from models.genotypes import parse_genotype
from utils.files import write_text_atomically

ORIGINS = ("searched", "random", "paper")
# (task, metric, label, digits, higher is better)
METRICS = (("identification", "top1", "Top-1 (%)", 2, True), ("verification", "eer", "EER (%)", 2, False),
           ("verification", "min_dcf_0.01", "minDCF(0.01)", 3, False))
METRIC_NAMES = frozenset(metric for _, metric, _, _, _ in METRICS)
DIAGNOSTIC_KEYS = ("arch_spread_normal", "arch_spread_reduce", "arch_move_normal", "arch_move_reduce",
                   "arch_move_total_normal", "arch_move_total_reduce", "arch_changed_normal", "arch_changed_reduce")


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _interval(interval: list[float] | None, digits: int = 2) -> str:
    return "-" if interval is None else f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _seed_values(record: dict, task: str, metric: str) -> list[float]:
    return list(record.get("tasks", {}).get(task, {}).get(f"{metric}_values") or [])


def _groups(records: list[dict], task: str, metric: str) -> dict[str, dict[str, list[float]]]:
    """Per origin: each cell's seed values (cells without any finished seed left out)."""
    groups: dict[str, dict[str, list[float]]] = {}
    for record in records:
        values = _seed_values(record, task, metric)
        if values:
            groups.setdefault(record["origin"], {})[record["name"]] = values
    return groups


def summarise(tasks: list[str], records: list[dict], rankings: dict[str, dict]) -> dict:
    """Every statistic of the report, per metric."""
    summary: dict = {}
    for task, metric, _, _, higher in METRICS:
        if task not in tasks:
            continue
        groups = _groups(records, task, metric)
        if not groups:
            continue
        entry: dict = {"groups": {origin: group_summary(list(cells.values())) for origin, cells in groups.items()}}
        random = list(groups.get("random", {}).values())
        if "searched" in groups and random:
            entry["searched_minus_random"] = compare_groups(list(groups["searched"].values()), random)
        if random:
            entry["percentiles"] = {}
            for origin in ("searched", "paper"):
                for name, values in groups.get(origin, {}).items():
                    entry["percentiles"][name] = percentile_interval(values, random, higher)
            if "searched" in groups:
                spreads = (entry["groups"]["searched"]["std"], entry["groups"]["random"]["std"])
                entry["answer"] = study_answer(entry.get("searched_minus_random"),
                                               {name: entry["percentiles"][name] for name in groups["searched"]},
                                               higher, spreads)
            entry["variance_components"] = variance_components(random)
            entry["ranking"] = _ranking(groups["random"], rankings)
        summary[metric] = entry
    return summary


def _ranking(random: dict[str, list[float]], rankings: dict[str, dict]) -> dict:
    """Per search: Kendall tau of its estimates of the random cells against their stand-alone means."""
    result = {}
    for search, estimates in rankings.items():
        names = [name for name in random if name in estimates.get("cells", {})]
        truth = [sum(random[name]) / len(random[name]) for name in names]
        result[search] = {
            key: kendall_tau([estimates["cells"][name][key] for name in names], truth)
            for key in ("log_probability", "val_top1")
        }
    return result


def search_diagnostics(records: list[dict]) -> dict:
    """Per finished search: its per-epoch diagnostics; across searches: the agreement of their cells per epoch."""
    rows, genotypes = {}, {}
    for record in records:
        run = (record.get("search") or {}).get("run")
        if record["origin"] != "searched" or record.get("search", {}).get("status") != "done" or not run:
            continue
        log = Path(run) / "Log"
        rows[record["name"]] = [{key: row[key] for key in ("epoch", "arch_steps", *DIAGNOSTIC_KEYS) if key in row}
                                for row in read_diagnostics(log / DIAGNOSTICS_FILE)]
        history = [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines() if line.strip()]
        genotypes[record["name"]] = {row["epoch"]: row["genotype"] for row in history if "genotype" in row}
    agreement = []
    common = set.intersection(*(set(by_epoch) for by_epoch in genotypes.values())) if len(genotypes) > 1 else set()
    for epoch in sorted(common):
        shares = mean_agreement([parse_genotype(by_epoch[epoch]) for by_epoch in genotypes.values()])
        agreement.append({"epoch": epoch, **shares})
    return {"searches": rows, "agreement": agreement}


def _cells_table(tasks: list[str], records: list[dict], seeds: list[int], member_seconds) -> str:
    metrics = [(task, metric, label, digits) for task, metric, label, digits, _ in METRICS if task in tasks]
    header = ["Cell", "Origin", "Parameters"]
    for _, _, label, _ in metrics:
        header += [f"{label}, mean ± sd over seeds", f"{label} per seed ({', '.join(map(str, seeds))})"]
    rows = []
    for record in records:
        row = [record["name"], record["origin"], f"{record['parameters']:,}" if record.get("parameters") else "-"]
        for task, metric, _, digits in metrics:
            values = _seed_values(record, task, metric)
            mean = sum(values) / len(values) if values else None
            spread = None
            if len(values) > 1:
                spread = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            runs = record.get("tasks", {}).get(task, {}).get("seeds", {})
            per_seed = [_number(runs.get(str(seed), {}).get(metric), digits) for seed in seeds]
            row += [f"{_number(mean, digits)} ± {_number(spread, digits)}", ", ".join(per_seed)]
        status = record.get("status", "not run")
        rows.append(row + [f"{member_seconds(record):.0f}", "failed" if status == "failed" else status])
    return _table(header + ["Time (s)", "Status"], rows)


def _statistics_text(tasks: list[str], summary: dict, rankings: dict) -> str:
    parts = []
    for task, metric, label, digits, _ in METRICS:
        if metric not in summary:
            continue
        entry = summary[metric]
        rows = [[origin, str(group["cells"]), _number(group["mean"], digits), _interval(group["interval"], digits),
                 _number(group["std"], digits)]
                for origin, group in ((o, entry["groups"][o]) for o in ORIGINS if o in entry["groups"])]
        parts.append(f"### {label}\n\nEach cell's value is the mean over its seeds; intervals are bootstrap 95 % "
                     "intervals (cells, and seeds within cells, resampled).\n\n"
                     + _table(["Origin", "Cells", "Mean", "95 % interval", "sd between cells"], rows))
        comparison = entry.get("searched_minus_random")
        if comparison:
            parts.append(_table(["Searched - random", "95 % interval", "Welch's t", "p (two-sided)"],
                                [[_number(comparison["difference"], digits), _interval(comparison["interval"], digits),
                                  _number(comparison["welch_t"]), _number(comparison["p"], 3)]]))
        if entry.get("percentiles"):
            parts.append("Percentile among the random cells (the share of them it beats):\n\n" + _table(
                ["Cell", "Percentile", "95 % interval"],
                [[name, _number(p["percentile"], 0), _interval(p["interval"], 0)]
                 for name, p in entry["percentiles"].items()]))
        if "answer" in entry:
            parts.append(_answer_text(entry["answer"], digits))
        if "variance_components" in entry:
            parts.append(_variance_text(entry["variance_components"], digits))
        if entry.get("ranking"):
            parts.append("The searches' ranking of the random cells against their stand-alone results (Kendall "
                         "tau-b; -: too few cells):\n\n" + _table(
                             ["Search", "tau, supernet probability", "95 % interval", "tau, inherited val Top-1",
                              "95 % interval"],
                             [[name, _number(r["log_probability"]["tau"]), _interval(r["log_probability"]["interval"]),
                               _number(r["val_top1"]["tau"]), _interval(r["val_top1"]["interval"])]
                              for name, r in entry["ranking"].items()]))
    return "\n".join(parts)


def _answer_text(answer: dict, digits: int) -> str:
    def verdict(holds: bool) -> str:
        return "yes" if holds else "no"

    widths = ", ".join(f"{name} {_number(width, 0)}" for name, width in answer["percentile_widths"].items())
    return (f"Does the study answer its question? **{verdict(answer['answered'])}**. Searched above random with "
            f"p < {SIGNIFICANCE}: {verdict(answer['shows_searched_better'])} (p {_number(answer['p'], 3)}); the 95 % "
            f"interval of the difference within ± {DIFFERENCE_HALF_WIDTH:g}: {verdict(answer['bounds_difference'])} "
            f"(± {_number(answer['difference_half_width'], digits)}); each searched cell's percentile known to "
            f"within {PERCENTILE_WIDTH:g} points: {verdict(answer['places_each_searched_cell'])} (interval widths: "
            f"{widths or '-'}). At the spread between cells measured here, a 95 % interval within "
            f"± {DIFFERENCE_HALF_WIDTH:g} takes about {answer['cells_per_group_to_bound'] or '-'} searched and as "
            "many random cells.\n")


def _variance_text(components: dict | None, digits: int) -> str:
    if components is None:
        return "Variance components of the random cells: - (needs two cells and a cell with two seeds).\n"
    return ("Variance components of the random cells "
            f"({components['cells']} cells, {components['runs']} trainings):\n\n"
            + _table(["sd between seeds of one cell", "sd between cells", "share of variance due to the cell"],
                     [[_number(components["seed_std"], digits), _number(components["cell_std"], digits),
                       _number(components["cell_share"])]]))


def _diagnostics_text(diagnostics: dict) -> str:
    searches = diagnostics["searches"]
    if not searches:
        return ""
    rows = []
    for name, epochs in searches.items():
        if not epochs:
            continue
        last = epochs[-1]
        rows.append([name, str(last["epoch"]), str(last.get("arch_steps", "-")),
                     *(_number(last.get(key), 4 if "spread" in key else 2) for key in DIAGNOSTIC_KEYS[:6]),
                     *(str(last.get(key, "-")) for key in DIAGNOSTIC_KEYS[6:])])
    text = ("## The searches\n\nAt each search's last epoch (functions/search_diagnostics.py): spread, the mean "
            "over edges of max - min softmax(alpha); move, the largest change of an alpha in the last epoch and "
            "since the start, over (steps x lr); changed, edges whose best operation changed in the last epoch. "
            "Per epoch: study_search.png.\n\n"
            + _table(["Search", "Epoch", "Arch. steps", "Spread normal", "Spread reduce", "Move normal",
                      "Move reduce", "Move from start normal", "Move from start reduce", "Changed normal",
                      "Changed reduce"], rows))
    if diagnostics["agreement"]:
        last = diagnostics["agreement"][-1]
        text += (f"\nAgreement of the {len(searches)} searches at epoch {last['epoch']} (mean over pairs): "
                 f"{100 * last['edges']:.0f} % of the derived edges, {100 * last['operations']:.0f} % of the edges "
                 "with their operation.\n")
    return text


def _errors(record: dict) -> str:
    return "; ".join(filter(None, (record.get("error"), record.get("ranking_error"))))


def write_report(cfg: CfgNode, root: Path, space: str, records: list[dict], rankings: dict[str, dict],
                 member_seconds) -> dict:
    """study.md, study.json, study.png and study_search.png (each written atomically)."""
    tasks, seeds = list(cfg.TASKS), list(cfg.TRAIN_SEEDS)
    summary = summarise(tasks, records, rankings)
    diagnostics = search_diagnostics(records)
    failed = [record for record in records if record.get("status") == "failed" or record.get("ranking_error")]
    report = {"config": json.loads(json.dumps(cfg)), "space": space, "members": records, "rankings": rankings,
              "summary": summary, "search_diagnostics": diagnostics,
              "failed": {record["name"]: _errors(record) for record in failed}}
    write_text_atomically(root / "study.json", json.dumps(report, indent=2) + "\n")
    failures = "".join(f"- {record['name']}: {_errors(record)}\n" for record in failed)
    genotypes = "\n".join(f"- {r['name']}: `{r['genotype']}`" for r in records if r.get("genotype"))
    markdown = (
        f"# Does the search pay off?\n\nSearch config `{cfg.SEARCH_CFG}` (space {space}), tasks {', '.join(tasks)}, "
        f"training seeds {', '.join(map(str, seeds))}, data `{cfg.DATA_DIR}`. Identification: Top-1 on the test "
        "partition of the checkpoint selected on `val`; verification: EER and minDCF of the last epoch. Time: "
        "search and trainings, wall clock. Written by `nas_study.py` (`--report_only` rewrites it from the "
        "members on disk).\n\n## The cells\n\n"
        f"{_cells_table(tasks, records, seeds, member_seconds)}\n"
        + (f"Failed members (the figures below leave out what they did not finish):\n\n{failures}\n" if failed else "")
        + f"## Searched against random\n\n{_statistics_text(tasks, summary, rankings)}\n"
        f"{_diagnostics_text(diagnostics)}\n## Cells\n\n{genotypes}\n"
    )
    write_text_atomically(root / "study.md", markdown)
    panels = {label: {origin: entry["groups"][origin]["cell_means"] for origin in ORIGINS
                      if origin in entry["groups"]}
              for _, metric, label, _, _ in METRICS if (entry := summary.get(metric))}
    if panels:
        plot_study(panels, root / "study.png", f"Searched, random and the paper's cells ({space})")
    if diagnostics["searches"]:
        plot_search_diagnostics(diagnostics["searches"], root / "study_search.png", "The study's searches",
                                diagnostics["agreement"] or None)
    return report
