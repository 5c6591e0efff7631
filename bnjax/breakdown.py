"""Where a suite's time went, as report lines: a table per section and in total (the
phases of `bnjax.timing`, waiting for other processes, the pool's checks, the analysis),
the XLA programs each process compiled or loaded from the persistent cache, and each
worker process's own table. Reads the invocation's record (``suite.json``) and the
sections' results only, so a stored suite re-renders the same lines.
"""

from __future__ import annotations

from bnjax import report, timing


def lines(results: dict, suite: dict) -> list[str]:
    """Where the invocation's time went, per section and in total (minutes), as a table;
    the columns add up to each section's wall time."""
    waited = any(res["time_s"].get("wait", 0.0) > 0 for res in results.values())
    phases = phase_columns([res["time_s"] for res in results.values()]
                            + [s["time_s"] for w in suite.get("workers", []) for s in w["sections"].values()])
    cols = [*phases, *(["wait"] if waited else []), "pool", "analysis"]
    rows, total = [], dict.fromkeys(cols, 0.0)
    for name, res in results.items():
        t = res["time_s"]
        rows.append([name] + [f"{t.get(c, 0.0) / 60:.2f}" for c in cols] + [f"{suite['seconds'][name] / 60:.2f}"])
        total = {c: total[c] + t.get(c, 0.0) for c in cols}
    rows.append(["**total**"] + [f"{total[c] / 60:.2f}" for c in cols] + [f"{suite['total_s'] / 60:.2f}"])
    head = ["section (minutes)", *(PHASE_HEADS[c] for c in phases),
            *(["waiting for runs other processes train"] if waited else []),
            "pool checks, reading runs back", "analysis, figures", "wall"]
    return ["Where this invocation's time went (XLA compilation counted apart from the phase that triggered it):",
            "", report.table(head, rows), "", *programs_lines(results, suite), *workers_lines(suite, phases)]


#: Column heads of `bnjax.timing.PHASES`; "cache" is shown only where a run loaded from the XLA cache.
PHASE_HEADS = {"data": "data loading, fingerprints", "setup": "setup, restore", "compile": "compilation",
               "cache": "loading from the XLA cache", "train": "training steps", "eval": "evaluation",
               "checkpoint": "checkpoint writes", "finish": "population stats, summaries"}


def phase_columns(times: list[dict]) -> list[str]:
    """`bnjax.timing.PHASES`, less "cache" when nothing was loaded from the XLA cache (so
    reports made before the cache keep their columns)."""
    return [c for c in timing.PHASES if c != "cache" or any(t.get("cache", 0.0) > 0 for t in times)]


def programs_lines(results: dict, suite: dict) -> list[str]:
    """How many XLA programs this process and each worker compiled or loaded from the
    persistent cache (nothing for suites made before it was counted)."""
    counts = [r.get("programs") for r in results.values()]
    if not any(counts):
        return []
    mine = {k: sum(c.get(k, 0) for c in counts if c) for k in ("compiled", "loaded")}
    parts = [f"this process: {timing.programs_text(mine)}"]
    for w in suite.get("workers", []):
        theirs = {k: sum(s.get("programs", {}).get(k, 0) for s in w["sections"].values())
                  for k in ("compiled", "loaded")}
        parts.append(f"{'slot' if 'executor' in suite else 'worker'} {w['worker']}: {timing.programs_text(theirs)}")
    where = suite.get("xla_cache") or "off"
    return [f"XLA programs ({_cache_text(where)}): " + "; ".join(parts) + ".", ""]


def _cache_text(where: str) -> str:
    return "no persistent cache" if where == "off" else "persistent cache `" + where + "`"


def workers_lines(suite: dict, phases: list[str]) -> list[str]:
    """Where each job slot's (or, in suites made before `bnjax.jobs`, each worker
    process's) time went, over all sections (minutes); "other" is its pool checks and
    reading runs back."""
    workers = suite.get("workers", [])
    if not workers:
        return []
    ex, rows = suite.get("executor"), []
    for w in workers:
        secs = w["sections"].values()
        t = {c: sum(s["time_s"].get(c, 0.0) for s in secs) for c in phases}
        wall = sum(s["seconds"] for s in secs)
        where = f" (cores {','.join(map(str, w['cores']))})" if w.get("cores") else ""
        name = f"{'slot' if ex else 'worker'} {w['worker']}{where}"
        rows.append([name, str(sum(s["trained"] for s in secs))] + [f"{t[c] / 60:.2f}" for c in phases]
                    + [f"{(wall - sum(t.values())) / 60:.2f}", f"{wall / 60:.2f}"])
    if ex is None:
        text = (f"The runs were trained by {len(workers)} worker processes (`--workers`, experiments/_workers.py), "
                "each pinned to its cores, while this process waited and analysed; where their time went:")
    else:
        n_jobs = sum(s.get("attempts", 1) for w in workers for s in w["sections"].values())
        text = (f"The runs were trained by {n_jobs} jobs of submitit's {ex['engine']} executor (`--executor`, "
                f"bnjax/jobs.py), {ex['jobs']} at once: one per section and slot"
                + (", each slot's jobs pinned to its cores" if ex["engine"] == "local" else "")
                + f"; {len(ex['failed'])} ended without a result"
                f"{' (' + '; '.join(_failed_text(f) for f in ex['failed']) + ')' if ex['failed'] else ''}"
                ". This process waited and analysed. Where each slot's time went (its jobs' own time, "
                "from their start to their result; process start-up not counted):")
    return [text, "", report.table([f"{'slot' if ex else 'worker'} (minutes)", "runs trained",
                                    *(PHASE_HEADS[c] for c in phases), "other", "wall"], rows), ""]


def _failed_text(f: dict) -> str:
    return f"job {f['job']}, {f['section']}, slot {f['slot']}: {f['error']}"
