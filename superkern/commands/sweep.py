"""``superkern sweep CONFIG``: run or resume a toy-model experiment grid (thin shim over
:func:`superkern.sweep.sweep`)."""
from __future__ import annotations

from pathlib import Path

from superkern.commands import path_arg


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run or resume a toy-model sweep (one JSONL row per model)",
        description="Expand an experiment grid (a TOML file or a built-in: fig1, small, density, "
                    "fig17 and aliases such as fig4b, fig7), validate every config, train what "
                    "is not yet in OUT's results files, and append one row per model to "
                    "OUT/results.jsonl (OUT/results.shard-K-of-N.jsonl with --shard). Safe to "
                    "kill and rerun.")
    p.add_argument("config", type=path_arg, nargs="?", help="experiment TOML file or built-in name")
    p.add_argument("--out", type=path_arg, help="output folder (default runs/<name>[-quick])")
    p.add_argument("--quick", action="store_true",
                   help="the experiment's reduced CPU form (a few minutes on 2 cores)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME",
                   help="apply a named [variants.NAME] table, e.g. fig1 --variant code "
                        "(40000 steps, batch 8192); repeatable")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field or axis, value in TOML: steps=200, m=[10,20], "
                        "gamma={linspace=[-1,1,5]}, dist=\"linear\"; repeatable")
    p.add_argument("--device", help="device for training (default: cuda if available)")
    p.add_argument("--max-instances", type=int, help="most models per launch")
    p.add_argument("--no-weights", action="store_true", help="do not save W and b")
    p.add_argument("--keep-going", action="store_true",
                   help="record a failed launch and continue with the next")
    p.add_argument("--dry-run", action="store_true",
                   help="expand and validate, print the plan, train nothing")
    p.add_argument("--list", action="store_true", help="list the built-in experiments")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--shard", metavar="K/N",
                   help="run only shard K of N (1-based) of the grid, appending to "
                        "OUT/results.shard-K-of-N.jsonl; N processes (on any machines "
                        "sharing OUT) given 1/N..N/N train every model once")
    p.add_argument("--devices", metavar="LIST",
                   help="start one shard per device and wait for all: 'all' (every visible "
                        "GPU) or a list such as cuda:0,cuda:1 (cpu allowed, repeats too)")
    p.set_defaults(func=run)


def _child_argv(args) -> list[str]:
    """The options a shard started by --devices repeats (everything but out, shard, device,
    devices and progress)."""
    argv = [args.config]
    if args.quick:
        argv.append("--quick")
    for v in args.variant:
        argv += ["--variant", v]
    for o in args.overrides:
        argv += ["--set", o]
    if args.max_instances:
        argv += ["--max-instances", str(args.max_instances)]
    if args.no_weights:
        argv.append("--no-weights")
    if args.keep_going:
        argv.append("--keep-going")
    return argv


def run(args) -> int:
    from superkern import sweep as sw

    if args.list or not args.config:
        for name, path in sw.builtin_experiments().items():
            exp = sw.load_experiment(str(path))
            alias = "" if name == exp.name else f" (alias of {exp.name})"
            print(f"{name:<8} {exp.size():>5} models{alias}  {exp.paper}")
        return 0 if args.list else 2
    if args.max_instances is not None and args.max_instances < 1:
        raise ValueError(f"--max-instances must be >= 1, got {args.max_instances}")
    shard = None
    if args.shard is not None:
        shard = sw.parse_shard(args.shard)
        from superkern.sweep.devices import follow_parent

        follow_parent()  # started by --devices: ends with that process
        if args.devices is not None:
            raise ValueError("--shard and --devices do not combine: --devices starts shards "
                             "1..N itself")
    if args.devices is not None and args.device:
        raise ValueError("--device and --devices do not combine: --devices gives each "
                         "shard its device")
    if args.devices is not None and not args.dry_run:
        from superkern.sweep.devices import resolve_devices, run_local_shards

        devices = resolve_devices(args.devices)
        exp, configs = sw.prepare(args.config, quick=args.quick, variants=args.variant,
                                  overrides=args.overrides)  # a bad grid fails before a start
        out = args.out or sw.default_out(exp, args.quick)
        return run_local_shards(_child_argv(args), devices, out,
                                grid_ids={c.run_id for c in configs},
                                progress=not args.no_progress)
    if args.dry_run:
        from superkern.sweep.devices import resolve_devices
        from superkern.sweep.runner import check_run_into, unique_configs
        from superkern.sweep.shard import model_cost, partition

        exp, configs = sw.prepare(args.config, quick=args.quick, variants=args.variant,
                                  overrides=args.overrides)
        max_inst = int(args.max_instances or exp.sweep.get("max_instances", 32))
        configs, repeated = unique_configs(configs)  # as a run trains them: each model once
        out = Path(args.out) if args.out else sw.default_out(exp, args.quick)
        if args.device is not None:  # (a plan for another machine names none)
            # what a run there would refuse at once
            check_run_into(configs, out, shard, args.device)
        launches = sw.group_configs(configs, max_instances=max_inst, device=args.device)
        again = f" ({repeated} repeated grid point(s) dropped)" if repeated else ""
        print(f"{exp.name}: {len(configs)} valid configs{again} in {len(launches)} launch(es); "
              f"axes: " + ", ".join(f"{k}={v}" for k, v in exp.axes.items()))
        print("base: " + ", ".join(f"{k}={v}" for k, v in exp.base.items()))
        if sw.results_files(out):  # what a run into that folder would do now
            from superkern.sweep.backfill import untested
            from superkern.sweep.runner import plan
            from superkern.sweep.shard import shard_configs, stored_rows

            mine = shard_configs(configs, shard) if shard else configs
            stored = stored_rows(out)
            todo, done = plan(mine, out, max_instances=max_inst, device=args.device,
                              stored=stored)
            pending = sum(len(lz.configs) for lz in todo)
            lack = [row for _, row in untested(mine, out, stored)]
            saved = sum(1 for row in lack if isinstance(row.get("weights"), str)
                        and (out / row["weights"]).is_file())
            part = f" (shard {shard[0]}/{shard[1]})" if shard else ""
            print(f"{out}{part}: {done} already done, {pending} to train in {len(todo)} "
                  f"launch(es); {len(lack)} finished model(s) without a test loss, {saved} "
                  "of them with saved weights to evaluate")
        else:
            part = f" (shard {shard[0]}/{shard[1]}: its share of the models)" if shard else ""
            print(f"{out}: no results yet; a run trains every model{part} into it")
        count = shard[1] if shard else (len(resolve_devices(args.devices))
                                        if args.devices is not None else 0)
        if count:
            parts = partition(configs, count)
            grand = sum(model_cost(c) for part in parts for c in part) or 1.0
            for k, part in enumerate(parts, 1):
                if not part and k > len(configs):  # every later shard is empty too
                    print(f"shards {k}..{count}/{count}: no models (more shards than models)")
                    break
                cost = sum(model_cost(c) for c in part)
                n_launch = len(sw.group_configs(part, max_instances=max_inst))
                print(f"shard {k}/{count}: {len(part)} models in {n_launch} launch(es), "
                      f"{100 * cost / grand:.1f}% of the estimated work")
        return 0
    summary = sw.sweep(args.config, args.out, quick=args.quick, variants=args.variant,
                       overrides=args.overrides, device=args.device,
                       max_instances=args.max_instances, progress=not args.no_progress,
                       save_weights=False if args.no_weights else None,
                       keep_going=args.keep_going, shard=shard)
    print(summary.text())
    return 1 if summary.failed else 0
