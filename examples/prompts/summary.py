"""Print the ranking of the prompt variants and the fairness table of the best one."""

from __future__ import annotations

import json
import sys


def main() -> None:
    ranking = json.load(open(sys.argv[1]))
    fairness = json.load(open(sys.argv[2]))
    paired = ranking["paired"]["variant"]
    print(f"== prompt variants on {paired['n']} shared orders (paired bootstrap, "
          f"{paired['bootstrap']['samples']} resamples)")
    for metric in ("exact_match", "chrf"):
        for e in paired["metrics"][metric]["ranking"]:
            p = f"  p vs best {e['p_vs_best']:.3f}" if "p_vs_best" in e else ""
            print(f"  {metric:12s} #{e['rank']} {e['group']:10s} {e['value']:8.3f}{p}")
    styles = fairness["groups"]["meta.style"]
    print("== fairness of the best variant across phrasings (meta.style)")
    for name, g in styles.items():
        ci = g.get("ci", {}).get("exact_match")
        shown = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
        print(f"  {name:16s} n={g['n']:3d}  exact_match {g['metrics']['exact_match']:.3f}{shown}"
              f"  chrf {g['metrics']['chrf']:.1f}")
    d = fairness["disparity"]["meta.style"]["metrics"]["exact_match"]
    if d["gap"] is not None:
        print(f"  gap {d['gap']:.3f} (worst {d['worst']['group']}, best {d['best']['group']}, ratio "
              f"{'n/a' if d['ratio'] is None else format(d['ratio'], '.2f')})")
    for gate in fairness.get("gates", []):
        print(f"  gate gap(exact_match) <= {gate['max_gap']}: {'pass' if gate['passed'] else 'FAIL'}")


if __name__ == "__main__":
    main()
