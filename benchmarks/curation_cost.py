"""Curation cost, measured (issue 30): the page actions an oracle needs to finish a review.

    python benchmarks/curation_cost.py [--work scratch/curation] [--sets lfw-dev,celeba-dev] [-v] [--offers]

``--offers``: also how right a choice made for the person would be, on the default clustering: a
noise face chosen for the cluster nearest it if within a threshold (the open-set one for as
many people as clusters, then others): faces chosen, the share of them whose person owns the
cluster (has most faces in it), and how many are one-photo strangers. (Why the page's "Faces
that may be this person" chooses none.)

For each dev set: the most prominent face of each photo (extracted and cached under --work by
eval_clustering.dev_faces, as eval_models.py does; the set's folder under --work is the dataset),
its references (``refs-<model>.h5`` under --work, embedded once as eval_models.py does), and the
review session the dashboard opens: ``crowdsort.open_review(dataset, refs=...)`` with a fresh
corrections log, clustered as the page first clusters it (``review.app.Dashboard(session)``: the
default algorithm and the model's measured parameters). An oracle that knows every face's true
person (its folder in the set) then brings the session to the goal state using only what the
page offers, through the session methods the page's buttons call, and counts its actions.

Goal state (checked at the end, from ``session.labels`` and ``session.names()``):

* every person with >= 2 faces has exactly one cluster, holding all their faces and no one
  else's, named with their identity (the set's folder name, which is also the reference label);
* every person with one face is in noise or alone in a cluster (never with someone else).

"Person with >= 2 photos" counts the faces the extraction kept (one per photo; a photo without a
face found drops out), so it is the number of people the review can name.

What counts as one action (a correction the page saves; choosing faces is free, as clicking
faces in the gallery is):

* ``accept``: clicking the reference library's suggested name for the open cluster
  (``session.suggestions``, the row marked suggested) -> ``session.name``.
* ``pick``: clicking one of the other names listed under it (the greyed nearest references; the
  page makes them buttons too) -> ``session.name``.
* ``type``: typing a name in the name box and saving -> ``session.name``.
* ``merge``: a "Merge NNN" button under "Most like it" (``session.nearest_clusters``, 3 shown,
  either cluster's detail) -> ``session.merge``; where neither cluster lists the other, the
  sidebar's merge box is used (both clusters chosen there, then Merge: counted as one action
  too, reported apart as ``mergebox``; the box offers named clusters and the 1000 largest).
  Answering "which name to keep" after a merge would count as one more (``keep``).
* ``move``: faces chosen in the open cluster's gallery (its first 48, as shown), moved to a
  person by typing or completing their name -> ``session.move(faces, name)``; a name no cluster
  has makes a new cluster with that name, so the move also names it. Several faces of one person
  moved together are one action; faces going to two people are two.
* ``reject``: faces chosen in the gallery, "Reject from cluster" -> ``session.reject``; every
  one-photo stranger of a cluster goes in one rejection.
* ``add``: the open cluster's "Faces that may be this person" (``session.likely_members``, its
  first 24 as shown, none chosen), the person's faces among them chosen (clicks, free),
  "Add N to cluster NNN" -> ``session.add_to``: in one action.
* ``queue``: the Review tab's queue of noise faces, each beside the named person nearest it
  (``session.noise_to_review``), read page by page (QUEUE_NOISE rows a page; turning a page is
  not a correction): the rows that name the face's own person ticked (free, as choosing faces
  is), on any page, then "Add the N ticked to the people beside them" -> ``session.add_each``:
  one action. Used once, before the person-by-person placing, ticking only the rows of people
  whose every noise face is so offered, and only where that finishes two people or more.
* ``map``: noise faces chosen with the map's box tool and moved to a person by name
  (-> ``session.move``). The box is the bounding box of the chosen faces on the session's map
  layout and must enclose no face of anyone else (the page's box takes every face inside it).
  This assumes the user can find the face on the map (hover thumbnails); it is the most
  generous rule here. The lasso is never used.
* ``like``: a box round one noise face (as ``map``), then the person's faces among what the
  map's "Faces like these" shows for it (``session.similar_noise``, its first 24) clicked, all
  moved to the person by name (-> ``session.move``): one action.

``redone`` (printed, included in the actions): moves of faces the oracle had already moved to
that person, needed because the session lost the earlier move. Today a face moved alone into a
new person (a group of one) is dropped from the corrections by the next merge or move anywhere
(``Annotations._add_group`` keeps only groups of two or more), so it falls back into its old
cluster.

Not used: split (a guess by average linkage, never cheaper for the oracle than moving the right
faces), undo, "not a face", re-clustering with other settings, the map's lasso.

The oracle's strategy, per cluster in the page's list order (largest first), until every
cluster is done: the cluster's person is the one with most faces in it among people with
>= 2 faces (ties: one with no cluster yet, then by name). If that person has no named cluster
yet, this becomes it: other people's faces are moved out (one move per person, to their named
cluster or, with their name typed, into a new one), one-photo strangers rejected together,
then the cluster named (accept / pick when the library lists the name, else type). If the person
already has a named cluster, this one is cleaned the same way and merged into it. A cluster of
one-photo people only is rejected whole. Then the noise faces of people with >= 2 faces are
placed: first the queue's ticks (above), then person by person, each time the one action that
places most of the person's noise faces left (one map box round them all; their named
cluster's "Faces that may be this person"; a box round one face with its "Faces like these"),
until none is left. Both passes are repeated
(at most three rounds) until the goal check passes. This is greedy, not a proven minimum. The
true labels only choose which faces, names and clusters to act on; every change goes through the
session method the page's button calls, and only choices the page shows are taken.

"Server seconds" is the time spent in the session methods the page calls for these actions:
``corr s``, the corrections (name, merge, move, reject: each appends a line to the corrections
log, fsynced, and re-applies every correction to the clustering) and ``view s``, the views the
oracle read to choose them (``suggestions`` before each naming, ``nearest_clusters`` of both
clusters before each merge, ``noise_to_review`` once for the queue's ticks, ``likely_members``
and ``similar_noise`` before each choice of a person's next action). Not counted: what the page redraws after each change (list, map, people cards), the
oracle's own bookkeeping (true labels, map boxes, which clusters are done), and opening the
session (embedding cached, graph and map built once, the first clustering), printed apart as
``open s``.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETS = ("lfw-dev", "celeba-dev")
KINDS = ("accept", "pick", "type", "merge", "mergebox", "keep", "move", "reject", "add", "queue", "map", "like")
CORRECTIONS = {"name", "merge", "move", "add_to", "add_each", "reject"}
from crowdsort.review.app import GALLERY_MAX, LIKELY_MAX, MERGE_OPTIONS, QUEUE_NOISE  # noqa: E402  (the page's sizes)


class Oracle:
    """Drives a ReviewSession to the goal state; counts actions and the seconds spent in it."""

    def __init__(self, session, truth: dict[str, str], verbose: bool = False, add: bool = True):
        self.s, self.verbose, self.use_add = session, verbose, add
        self.person = np.array([truth[i] for i in session.ids], dtype=object)
        counts = Counter(self.person)
        self.multi = {p for p, n in counts.items() if n >= 2}
        self.actions: Counter = Counter()
        self.seconds: Counter = Counter()  # session method → seconds (what the page would have called)
        self.log: list[str] = []
        self.moved: dict[str, str] = {}  # face → person a move put it with
        self.redone = 0  # moves of a face already moved to that person: the session lost the first
        self.phase = "clusters"  # which pass acts: the breakdown counts (pass, kind)
        self.by_pass: Counter = Counter()

    # -- session calls, timed ---------------------------------------------------------------
    def call(self, fn, *args, **kwargs):
        """``fn`` (a session method the page calls for what the oracle does), timed."""
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[fn.__name__] += time.perf_counter() - t

    def act(self, kind: str, what: str, fn, *args, **kwargs):
        self.actions[kind] += 1
        self.by_pass[self.phase, kind] += 1
        if fn in (self.s.move, self.s.add_to):
            faces, person = args if fn == self.s.move else (args[1], self.s.names().get(args[0], ""))
            if any(self.moved.get(f) == person for f in faces):
                self.redone += 1
                what += " (again: the session lost the earlier move)"
            self.moved.update(dict.fromkeys(faces, person))
        self.log.append(f"{kind:<8} {what}")
        if self.verbose:
            print(f"    {kind:<8} {what}", flush=True)
        return self.call(fn, *args, **kwargs)

    # -- state ----------------------------------------------------------------------------
    def homes(self) -> dict[str, int]:
        """person → the cluster named after them."""
        out = {}
        for c, n in self.s.names().items():
            out.setdefault(n, c)
        return out

    def done(self, c: int, homes: dict[str, int]) -> bool:
        people = set(self.person[self.s.labels == c])
        if len(people) != 1:
            return False
        p = people.pop()
        return p not in self.multi or homes.get(p) == c

    def rows_of(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.s.labels == c)

    def shown(self, c: int) -> set:
        """Rows the gallery shows for cluster ``c`` (the only ones it lets you choose)."""
        return set(self.s.members(c)[:GALLERY_MAX].tolist())

    # -- the strategy ---------------------------------------------------------------------
    def run(self, rounds: int = 3) -> bool:
        for _ in range(rounds):
            self.phase = "clusters"
            self.clusters_pass()
            self.phase = "noise"
            self.noise_pass()
            if not self.problems():
                return True
        return False

    def clusters_pass(self) -> None:
        seen_stuck = 0
        while True:
            homes = self.homes()
            order = self.s.clusters()["cluster"].tolist()
            todo = [c for c in order if not self.done(int(c), homes)]
            if not todo:
                return
            before = sum(self.actions.values())
            self.fix_cluster(int(todo[0]), homes)
            if sum(self.actions.values()) == before:
                seen_stuck += 1
                if seen_stuck > 3:
                    raise RuntimeError(f"no progress on cluster {todo[0]}")

    def fix_cluster(self, c: int, homes: dict[str, int]) -> None:
        rows = self.rows_of(c)
        counts = Counter(self.person[rows])
        multi_here = [p for p in counts if p in self.multi]
        ids = self.s.ids
        if not multi_here:  # one-photo people only
            self.check_shown(c, rows)
            self.act("reject", f"{len(rows)} one-photo strangers, cluster {c}", self.s.reject, list(ids[rows]))
            return
        owner = min(multi_here, key=lambda p: (-counts[p], p in homes, p))
        keep_face = ids[rows[self.person[rows] == owner][0]]
        # everyone else out: one move per person with >= 2 faces, one rejection for the rest
        for p in sorted(counts, key=lambda p: (-counts[p], p)):
            if p == owner or p not in self.multi:
                continue
            c = self.s.cluster_of(keep_face)
            rows = self.rows_of(c)
            theirs = rows[self.person[rows] == p]
            self.check_shown(c, theirs)
            self.act("move", f"{len(theirs)} of {p} out of cluster {c}", self.s.move, list(ids[theirs]), p)
        c = self.s.cluster_of(keep_face)
        rows = self.rows_of(c)
        strangers = rows[self.person[rows] != owner]
        if len(strangers):
            self.check_shown(c, strangers)
            self.act("reject", f"{len(strangers)} one-photo strangers from cluster {c}", self.s.reject, list(ids[strangers]))
        c = self.s.cluster_of(keep_face)
        homes = self.homes()
        home = homes.get(owner)
        if home is None or home == c:
            if self.s.names().get(c) != owner:
                self.name(c, owner)
            return
        self.merge(c, home, owner)

    def name(self, c: int, person: str) -> None:
        sugg = self.call(self.s.suggestions, c)
        listed = sugg[sugg["label"] != "unknown"]
        hit = listed[listed["label"] == person]
        if len(hit):
            kind = "accept" if bool(hit["suggested"].iloc[0]) else "pick"
            self.act(kind, f"cluster {c} '{person}'", self.s.name, c, person)
        else:
            self.act("type", f"cluster {c} '{person}'", self.s.name, c, person)

    def merge(self, c: int, home: int, person: str) -> None:
        near_c = self.call(self.s.nearest_clusters, c)["cluster"].tolist()
        near_h = self.call(self.s.nearest_clusters, home)["cluster"].tolist()
        if home in near_c or c in near_h:
            kind = "merge"
        else:
            rows = self.s.clusters()
            offered = rows[(rows["name"] != "") | (np.arange(len(rows)) < MERGE_OPTIONS)]["cluster"].tolist()
            if c not in offered or home not in offered:
                rows_c = self.rows_of(c)
                self.check_shown(c, rows_c)
                self.act("move", f"all {len(rows_c)} of cluster {c} to '{person}'", self.s.move,
                         list(self.s.ids[rows_c]), person)
                return
            kind = "mergebox"
        from crowdsort.review.session import NameConflict

        try:
            self.act(kind, f"cluster {c} into {home} '{person}'", self.s.merge, [home, c])
        except NameConflict:
            self.act("keep", f"name '{person}' for {c} + {home}", self.s.merge, [home, c], name=person)

    def check_shown(self, c: int, rows) -> None:
        missing = set(np.asarray(rows).tolist()) - self.shown(c)
        if missing:
            raise RuntimeError(f"cluster {c}: {len(missing)} faces to choose are not in its gallery")

    def noise_pass(self) -> None:
        self.queue_ticks()
        for p in sorted(self.multi):
            rows = np.flatnonzero((self.s.labels == -1) & (self.person == p))
            while len(rows):
                options = list(self.one_action_options(p, rows))
                if not options:
                    raise RuntimeError(f"no action the page offers places the {len(rows)} noise faces of {p} left")
                kind, what, fn, args, done = max(options, key=lambda o: len(o[-1]))
                self.act(kind, what, fn, *args)
                rows = rows[~np.isin(rows, done)]

    def queue_ticks(self) -> None:
        """The Review tab's queue, read page by page (QUEUE_NOISE rows a page; turning pages is
        not a correction, and ticks stay while the pages turn): every row naming the face's own
        person ticked where that places all the person's noise faces, then "Add the ticked" once,
        where that finishes two people or more (else placing them person by person costs no more)."""
        queue = self.call(self.s.noise_to_review)
        right = queue[queue["name"].to_numpy() == self.person[queue["row"].to_numpy(int)]]
        left = Counter(self.person[self.s.labels == -1])
        placed = Counter(self.person[right["row"].to_numpy(int)])
        right = right[np.array([placed[p] == left[p] for p in self.person[right["row"].to_numpy(int)]], bool)]
        if len(set(self.person[right["row"].to_numpy(int)])) < 2:
            return
        each = {int(c): list(g["item_id"]) for c, g in right.groupby("cluster")}
        pages = np.flatnonzero(queue["row"].isin(right["row"]).to_numpy()) // QUEUE_NOISE + 1
        self.act("queue", f"{len(right)} ticked rows on pages {', '.join(map(str, sorted(set(pages))))} of the queue's "
                 f"{-(-len(queue) // QUEUE_NOISE)}, {len(each)} people", self.s.add_each, each)

    def one_action_options(self, p: str, rows: np.ndarray):
        """``(kind, what, session method, its args, rows of ``rows`` it places)`` for each single
        action that places some of ``rows`` (noise faces of ``p``) with ``p``: one map box round
        them all; the named cluster's "Faces that may be this person" (its first LIKELY_MAX);
        a box round one face, with those of its "Faces like these" (first LIKELY_MAX) chosen
        too, moved to ``p`` by name."""
        ids = self.s.ids
        if self.box_clean(rows, p):
            yield "map", f"{len(rows)} noise faces of {p} (one box)", self.s.move, (list(ids[rows]), p), rows
        home = self.homes().get(p)
        if home is not None and self.use_add:
            offered = self.call(self.s.likely_members, home)["row"].to_numpy()[:LIKELY_MAX].astype(int)
            mine = offered[np.isin(offered, rows)]
            if len(mine):
                yield ("add", f"{len(mine)} of {len(offered)} faces offered to {home} '{p}'", self.s.add_to,
                       (home, list(ids[mine])), mine)
        for r in rows:
            if not self.box_clean(np.array([r]), p):
                continue
            like = self.call(self.s.similar_noise, [ids[r]])["row"].to_numpy()[:LIKELY_MAX].astype(int) \
                if self.use_add else np.zeros(0, int)
            mine = np.array([r, *like[np.isin(like, rows)]])
            yield ("map" if len(mine) == 1 else "like", f"{len(mine)} noise faces of {p} (a box round one"
                   f"{', the rest from its faces like it' if len(mine) > 1 else ''})", self.s.move, (list(ids[mine]), p), mine)

    def box_clean(self, rows: np.ndarray, p: str) -> bool:
        from crowdsort.review.map_select import in_box
        from crowdsort.review.session import NOT_FACE

        xy = self.s.layout[rows]
        inside = in_box(self.s.layout, (*xy.min(0), *xy.max(0))) & (self.s.labels != NOT_FACE)
        return bool((self.person[inside] == p).all())

    # -- the goal ---------------------------------------------------------------------------
    def problems(self) -> list[str]:
        labels, names, out = self.s.labels, self.s.names(), []
        for p in sorted(set(self.person)):
            mine = labels[self.person == p]
            if p in self.multi:
                c = int(mine[0])
                if c < 0 or (mine != c).any():
                    out.append(f"{p}: faces in clusters {sorted(set(mine.tolist()))}")
                elif (self.person[labels == c] != p).any():
                    out.append(f"{p}: cluster {c} holds others")
                elif names.get(c) != p:
                    out.append(f"{p}: cluster {c} named {names.get(c)!r}")
            elif mine[0] >= 0 and (labels == mine[0]).sum() > 1:
                out.append(f"{p} (one photo): in cluster {int(mine[0])} with others")
        return out


def offers(session, person: np.ndarray, grid=(0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65)) -> list[dict]:
    """How right the offers of ``session.likely_members`` are, over every cluster of the session as it
    is, at its threshold (first row) and at each distance of ``grid``: the same rule (the nearest
    cluster, within the threshold), one matrix for all noise faces."""
    ids, _, means = session._cluster_means()
    owner = {c: Counter(person[session.labels == c]).most_common(1)[0][0] for c in ids}
    rows = np.flatnonzero((session.labels == -1) & ~np.isin(session.ids, list(session.ann.rejected)))
    D = 1.0 - session.X[rows] @ means.T
    near, dist = D.argmin(axis=1), D.min(axis=1)
    right = person[rows] == np.array([owner[c] for c in ids[near]], dtype=object)
    once = Counter(person)
    stranger = np.array([once[p] == 1 for p in person[rows]])
    out = []
    for t in (session.placement_threshold(len(ids)), *grid):
        on = dist <= t
        out.append({"threshold": t, "noise": len(rows), "offered": int(on.sum()), "right": int((on & right).sum()),
                    "strangers": int((on & stranger).sum()), "precision": (on & right).sum() / max(on.sum(), 1)})
    return out


def references(name: str, model: str, shared: Path, work: Path) -> Path:
    from crowdsort.naming.identify import embed_references, save_references
    from eval_models import REFS

    h5 = work / name / f"refs-{model}.h5"
    if not h5.exists():
        save_references(embed_references(shared / REFS[name], model, progress=False), h5)
    return h5


def measure(name: str, shared: Path, work: Path, verbose: bool, with_offers: bool = False, add: bool = True) -> dict:
    from crowdsort import open_review
    from crowdsort.faces.embed import DEFAULT_FACE_MODEL
    from crowdsort.review.app import Dashboard
    from eval_clustering import dev_faces

    _, faces, ident = dev_faces(name, shared, work)
    truth = dict(zip(faces["face_id"], ident))
    refs = references(name, DEFAULT_FACE_MODEL, shared, work)
    dataset = work / name
    log = dataset / "annotations.jsonl"
    for f in (log, log.with_name(log.name + ".bak")):  # each run starts from the default clustering
        f.unlink(missing_ok=True)
    t = time.perf_counter()
    session = open_review(dataset, refs=refs, progress=False)
    Dashboard(session)  # the page's first clustering
    opened = time.perf_counter() - t
    start = session.summary()
    oracle = Oracle(session, truth, verbose, add)
    sweep = offers(session, oracle.person) if with_offers else []
    ok = oracle.run()
    people = len(oracle.multi)
    total = sum(oracle.actions.values())
    return {"set": name, "faces": len(session.ids), "clusters": start["clusters"], "noise": start["noise"],
            "people": people, "actions": total, "kinds": oracle.actions, "per": total / people,
            "corr_s": sum(v for k, v in oracle.seconds.items() if k in CORRECTIONS),
            "view_s": sum(v for k, v in oracle.seconds.items() if k not in CORRECTIONS), "seconds": oracle.seconds, "open_s": opened, "ok": ok, "problems": oracle.problems(),
            "redone": oracle.redone, "log": oracle.log,
            "by_pass": oracle.by_pass, "offers": sweep}


def main(argv=None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(here / "scratch" / "curation"))
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("-v", "--verbose", action="store_true", help="print every action")
    ap.add_argument("--offers", action="store_true", help="how right a choice of noise faces made for the person would be")
    ap.add_argument("--no-add", action="store_true", help='the oracle without the galleries "Faces that may be this person" and "Faces like these"')
    args = ap.parse_args(argv)
    results = []
    for name in args.sets.split(","):
        r = measure(name, Path(args.shared), Path(args.work), args.verbose, args.offers, not args.no_add)
        results.append(r)
        if args.verbose:
            print("  seconds by session method: " + ", ".join(f"{k} {v:.2f}" for k, v in r["seconds"].most_common()))
        print(f"{name}: {r['faces']} faces, default clustering {r['clusters']} clusters + {r['noise']} noise; "
              f"goal {'reached' if r['ok'] else 'NOT reached: ' + '; '.join(r['problems'][:5])}", flush=True)
        for phase in ("clusters", "noise"):
            kinds = {k: n for (p, k), n in r["by_pass"].items() if p == phase}
            print(f"  {phase} pass: {sum(kinds.values())} actions: "
                  + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1])))
        for o in r["offers"]:
            print(f"  offers within {o['threshold']:.3f}: {o['offered']} of {o['noise']} noise faces, "
                  f"{o['precision']:.3f} to their person's cluster, {o['strangers']} one-photo strangers", flush=True)
    head = f"{'set':<11}{'people>=2':>10}{'actions':>8}" + "".join(f"{k:>9}" for k in KINDS) + \
           f"{'per person':>11}{'redone':>7}{'corr s':>8}{'view s':>8}{'open s':>8}"
    print("\n" + head)
    for r in results:
        print(f"{r['set']:<11}{r['people']:>10}{r['actions']:>8}" + "".join(f"{r['kinds'][k]:>9}" for k in KINDS)
              + f"{r['per']:>11.2f}{r['redone']:>7}{r['corr_s']:>8.2f}{r['view_s']:>8.2f}{r['open_s']:>8.1f}")
    print("goal: at most 1.2 actions per person with >= 2 photos, on both sets")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
