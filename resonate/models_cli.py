"""``python -m resonate models list|fetch NAME``: the community models the separate stage can use.

``list`` shows each catalogued model's purpose, size, licence and whether it is on this machine;
``fetch`` downloads one into the models folder, only when asked, and checks its SHA-256.
"""

from __future__ import annotations

import sys

from resonate.separation import community


def add_models_arguments(p) -> None:
    sub = p.add_subparsers(dest="models_command", required=True, metavar="list|fetch")
    listing = sub.add_parser("list", help="catalogued community models: purpose, size, licence, on this machine or not")
    listing.add_argument("--models-dir", metavar="DIR", help="models folder (default ~/.cache/resonate/models, "
                         "or $RESONATE_MODELS_DIR)")
    listing.add_argument("--debug", action="store_true", help="show tracebacks")
    get = sub.add_parser("fetch", help="download a community model into the models folder (SHA-256 checked)")
    get.add_argument("name", metavar="NAME", help="a name from `models list`")
    get.add_argument("--models-dir", metavar="DIR", help="models folder (default ~/.cache/resonate/models)")
    get.add_argument("--trust-unpinned", action="store_true",
                     help="for a model without a published SHA-256: download it anyway and record the hash of "
                          "the file received (later loads are checked against that record)")
    get.add_argument("--debug", action="store_true", help="show tracebacks")


def run_models(args) -> int:
    if args.models_command == "list":
        return _list(args)
    return _fetch(args)


def _list(args) -> int:
    models = community.catalogue()
    root = community.models_root(args.models_dir)
    print(f"Community models (run one with --set separate.model=NAME); models folder: {root}")
    for model in models.values():
        here = community.on_this_machine(model, args.models_dir)
        trusted = bool(community.expected_sha256(model, community.model_folder(model, args.models_dir)))
        state = "on this machine" if here else "not on this machine"
        hash_note = "SHA-256 pinned" if model.pinned else ("hash recorded on fetch" if trusted else
                                                             "no published SHA-256 (fetch needs --trust-unpinned)")
        print(f"\n{model.name}  [{state}]")
        print(f"  {model.title}: {community.PURPOSES[model.purpose]}")
        print(f"  {model.architecture}, {model.size_text()}, {hash_note}")
        print(f"  licence: {model.licence}")
        print(f"  by {model.authors}: {model.page}" if model.page else f"  by {model.authors}")
    return 0


def _fetch(args) -> int:
    model = community.entry(args.name)
    print(f"{model.name}: {model.title}, {model.size_text()}; licence: {model.licence}", file=sys.stderr)
    shown = {"step": -1}

    def progress(done: int, total: int) -> None:
        step = int(10 * done / total) if total else -1
        if step != shown["step"]:
            shown["step"] = step
            print(f"  {done / 1e6:,.0f} MB" + (f" of {total / 1e6:,.0f} MB" if total else ""), file=sys.stderr)

    folder = community.fetch(args.name, args.models_dir, trust_unpinned=args.trust_unpinned, progress=progress)
    record = "" if model.pinned else f" (its SHA-256 recorded in {folder / community.TRUST_RECORD})"
    print(f"{model.name} is in {folder}{record}; use it with --set separate.model={model.name}")
    return 0
