"""Issue 32's cases: the real CLI, in subprocesses, on a small dataset it builds itself.

    python benchmarks/probe_cli_cases.py          (or: python benchmarks/probe_bad_inputs.py, which
                                                   prints these rows after the decoded files)

The dataset is the example's photos (``crowdsort example D/images``, ``extract-faces -d D
--from 'images/*' --to faces``, ``cluster -d D``), built once in a temporary folder and copied
for each case that changes it. Each case runs ``crowdsort`` (``python -c 'from crowdsort.cli
import main'``, so ``PYTHONPATH`` decides which checkout runs) with ``-q`` and reports: the exit
code, the first line of stderr (and how many lines there were), whether a Python traceback
appeared, whether data was lost (a user's file or a dataset file changed, a name lost), and a
verdict: ``ok`` or ``DEFECT``. A case that cannot run here (no Ray, no address but loopback, no
PyAV) is printed as ``skipped: why``, verdict ``ok``. About a minute on 2 cores (Ray's local
cluster is most of it).
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from crowdsort.cli import main; sys.exit(main())"]
NAN = float("nan")


class Res:
    """What one crowdsort run did."""

    def __init__(self, code, out, err, s):
        self.code, self.out, self.err, self.s = code, out, err, s
        lines = [l for l in err.splitlines() if l.strip()]
        self.first = lines[0].strip() if lines else ""
        self.last = lines[-1].strip() if lines else ""
        self.nlines = len(lines)
        self.traceback = "Traceback (most recent call last)" in err

    def text(self, lost: bool | None = None, extra: str = "") -> str:
        code = "timeout" if self.code is None else f"exit {self.code}"
        parts = [f"{code} in {self.s:.0f} s"]
        if self.first:
            parts.append(f"stderr ({self.nlines} line{'s' * (self.nlines != 1)}): {self.first}")
            if self.nlines > 1:
                parts.append(f"last line: {self.last}")
        else:
            parts.append("stderr empty")
        parts.append("TRACEBACK" if self.traceback else "no traceback")
        if lost is not None:
            parts.append("DATA LOST" if lost else "nothing lost")
        if extra:
            parts.append(extra)
        return "; ".join(parts)


def run(args, cwd=None, env=None, timeout=180, quiet=True) -> Res:
    t = time.perf_counter()
    full = {**os.environ, **(env or {})}
    try:
        r = subprocess.run(["nice", *CLI, *(["-q"] if quiet else []), *map(str, args)], cwd=cwd, env=full,
                           capture_output=True, text=True, errors="backslashreplace", timeout=timeout)
        return Res(r.returncode, r.stdout, r.stderr, time.perf_counter() - t)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Res(None, "", err, time.perf_counter() - t)


def digest(path: Path) -> str:
    """A hash of a file or of every file under a folder (names and contents)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(path) if p != path else p.name).encode("utf-8", "surrogateescape"))
        h.update(p.read_bytes())
    return h.hexdigest()


def one_line_refusal(r: Res, *needles: str) -> bool:
    """Exit 1, one line on stderr naming ``needles``, no traceback."""
    return r.code == 1 and r.nlines == 1 and not r.traceback and all(n in r.err for n in needles)


def face_ids(ds: Path) -> list[str]:
    import pandas as pd

    return sorted(pd.read_parquet(ds / "faces" / "faces.parquet", columns=["face_id"])["face_id"])


def cells(path: Path, column: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return [row[column] for row in csv.DictReader(f)]


# -- the cases --------------------------------------------------------------------------------------
class Probe:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.rows: list[tuple[str, str, float, bool]] = []

    def add(self, kind: str, text: str, ok: bool) -> None:
        text = text.replace(str(self.tmp), "T")  # T: the probe's temporary folder
        self.rows.append((f"CLI: {kind}", text, NAN, ok))
        print(f"  {'ok    ' if ok else 'DEFECT'} {kind}: {text}", file=sys.stderr, flush=True)

    def guard(self, kind: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # the probe's own failure is a row, not the end of the table
            self.add(kind, f"probe failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", False)

    def copy(self, name: str) -> Path:
        dest = self.tmp / name
        shutil.copytree(self.base, dest, symlinks=True)
        return dest

    # the dataset, the reference folder and a names file
    def build(self) -> None:
        self.base = self.tmp / "base"
        t = time.perf_counter()
        for args in (["example", self.base / "images"],
                     ["extract-faces", "-d", self.base, "--from", "images/*", "--to", "faces"],
                     ["cluster", "-d", self.base]):
            r = run(args)
            if r.code != 0:
                raise RuntimeError(f"building the dataset: crowdsort {args[0]}: {r.first or r.code}")
        self.refs = self.tmp / "refs"  # two people, two photos each, outside the dataset
        for person in ("grace_hopper", "eileen_collins"):
            (self.refs / person).mkdir(parents=True)
            for p in sorted((self.base / "images" / person).glob("*.jpg"))[:2]:
                shutil.copy(p, self.refs / person / p.name)
        self.names = self.tmp / "names.csv"
        self.names.write_text("label,cluster\nAda,0\nBea,1\n")
        # a name given in the dashboard, kept in annotations.jsonl by face id
        code = ("import sys; from crowdsort.review.session import Annotations; "
                "Annotations.load(sys.argv[1]).record(names={sys.argv[2]: 'Ada'})")
        subprocess.run([sys.executable, "-c", code, str(self.base / "annotations.jsonl"), face_ids(self.base)[0]],
                       check=True)
        print(f"dataset built in {time.perf_counter() - t:.0f} s: {len(face_ids(self.base))} faces", file=sys.stderr)

    def moved_and_copied(self) -> None:
        ids = face_ids(self.base)
        src = self.copy("to-move")
        moved = self.tmp / "elsewhere" / "renamed"
        moved.parent.mkdir()
        shutil.move(src, moved)
        copied = self.tmp / "copied"
        subprocess.run(["cp", "-r", str(self.base), str(copied)], check=True)  # new mtimes, as a plain cp gives
        for what, ds in (("moved (mv)", moved), ("copied (cp -r, new mtimes)", copied)):
            ann = (ds / "annotations.jsonl").read_bytes()
            r = run(["extract-faces", "-d", ds, "--from", "images/*", "--to", "faces"], quiet=False)
            summary = next((l for l in r.err.splitlines() + r.out.splitlines() if " processed, " in l), "")
            nums = {k: int(v) for v, k in (w.strip().split(" ", 1)[:2] for w in
                                           summary.split(":", 1)[-1].split(";")[0].split(","))
                    if v.isdigit()} if summary else {}
            same_ids = face_ids(ds) == ids
            c = run(["cluster", "-d", ds])
            crops_ok = c.code == 0 and all((ds / p).is_file() or Path(p).is_file()
                                           for p in cells(ds / "cluster" / "assignments.csv", "crop_path"))
            names_kept = same_ids and (ds / "annotations.jsonl").read_bytes() == ann
            ok = (r.code == 0 and not r.traceback and nums.get("processed") == 0 and nums.get("gone") == 0
                  and same_ids and crops_ok and names_kept)
            self.add(f"dataset {what}, extract-faces again",
                     f"exit {r.code}; {summary.replace(str(ds), 'D') or 'no summary'}; face ids "
                     f"{'kept' if same_ids else 'CHANGED'}; names {'kept' if names_kept else 'LOST'}; "
                     f"crops after cluster {'found' if crops_ok else 'MISSING'}; "
                     f"{'TRACEBACK' if r.traceback else 'no traceback'}", ok)

    def outputs_never_replace(self) -> None:
        ds = self.copy("outputs")
        mine = self.tmp / "notes.txt"
        mine.write_text("years of work\n")
        faces = ds / "faces" / "faces.parquet"
        before = faces.read_bytes()
        cases = [
            ("apply-labels --to a user's file", ["apply-labels", "-d", ds, "--labels", self.names, "--to", mine]),
            ("apply-labels --to faces/faces.parquet",
             ["apply-labels", "-d", ds, "--labels", self.names, "--to", "faces/faces.parquet"]),
            ("identify --to a user's file", ["identify", "-d", ds, "--refs", self.refs, "--to", mine]),
            ("identify --to faces/faces.parquet", ["identify", "-d", ds, "--refs", self.refs, "--to", "faces/faces.parquet"]),
            ("label-clusters --to a user's file", ["label-clusters", "-d", ds, "--refs", self.refs, "--to", mine]),
            ("label-clusters --to faces/faces.parquet",
             ["label-clusters", "-d", ds, "--refs", self.refs, "--to", "faces/faces.parquet"]),
        ]
        for what, args in cases:
            r = run(args)
            lost = mine.read_text() != "years of work\n" or faces.read_bytes() != before
            self.add(what, r.text(lost), one_line_refusal(r, "--to") and not lost)

    def from_another_folder(self) -> None:
        ds = self.tmp / "rel" / "ds"
        ds.parent.mkdir()
        shutil.copytree(self.base / "images", ds / "images")
        cwd = self.tmp / "rel" / "somewhere"
        cwd.mkdir()
        r1 = run(["extract-faces", "-d", "../ds", "--from", "images/*"], cwd=cwd)
        r2 = run(["cluster", "-d", "../ds"], cwd=cwd)
        r3 = run(["apply-labels", "-d", "../ds", "--labels", self.names, "--to", "named.csv", "--export", "export"],
                 cwd=cwd)
        import pandas as pd

        crops = pd.read_parquet(ds / "faces" / "faces.parquet")["crop_path"].tolist() if r1.code == 0 else []
        assigned = cells(ds / "cluster" / "assignments.csv", "crop_path") if r2.code == 0 else []
        absolute = [p for p in crops + assigned if os.path.isabs(p)]
        # faces.parquet names crops inside its run (crops/…), assignments.csv inside the dataset (faces/crops/…)
        missing = [p for p in crops if not (ds / "faces" / p).is_file()] + \
            [p for p in assigned if not (ds / p).is_file()]
        exported = sorted(p.name for p in (ds / "export").glob("*/*.jpg")) if (ds / "export").is_dir() else []
        worst = next((r for r in (r1, r2, r3) if r.code != 0), r3)
        ok = (all(r.code == 0 and not r.traceback for r in (r1, r2, r3)) and crops and not absolute and not missing
              and len(exported) == len(assigned))
        self.add("extract-faces/cluster/apply-labels --export from another folder (-d ../ds)",
                 f"{worst.text()}; {len(crops)} crop paths, {len(absolute)} absolute, {len(missing)} not under the "
                 f"dataset; {len(exported)} crops exported", ok)

    def video(self) -> None:
        try:
            import av
            import numpy as np
            from PIL import Image
        except ImportError as e:
            self.add("video with damaged packets", f"skipped: {e}", True)
            self.add("0-byte --shots file", f"skipped: {e}", True)
            return
        src = self.tmp / "videos"
        src.mkdir()
        photo = Image.open(self.base / "images" / "grace_hopper" / "grace_hopper_01.jpg").convert("RGB")
        face = photo.resize((160, round(160 * photo.height / photo.width)))
        for name in ("whole.mp4", "damaged.mp4"):
            with av.open(str(src / name), "w") as c:
                s = c.add_stream("mpeg4", rate=10)
                s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
                s.codec_context.gop_size = 10
                for i in range(40):
                    im = Image.new("RGB", (320, 240), (90, 110, 130))
                    im.paste(face, (40 + 2 * i, 10))
                    for p in s.encode(av.VideoFrame.from_image(im)):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
        path = src / "damaged.mp4"
        with av.open(str(path)) as c:  # 300 bytes of noise at the middle packet, the container whole
            packets = [p for p in c.demux(c.streams.video[0]) if p.size]
            pos = packets[len(packets) // 2].pos
        data = bytearray(path.read_bytes())
        data[pos:pos + 300] = np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        ds = self.tmp / "video-ds"
        r = run(["extract-faces", "-d", ds, "--from", src])
        import pandas as pd

        n = {}
        if r.code == 0:
            faces = pd.read_parquet(ds / "faces" / "faces.parquet")
            n = {k: int(faces["image_path"].astype(str).str.endswith(k).sum()) for k in ("whole.mp4", "damaged.mp4")}
        ok = r.code == 0 and not r.traceback and r.nlines <= 2 and "damaged.mp4" in r.err \
            and n.get("damaged.mp4", 0) >= 0.7 * n.get("whole.mp4", 1)
        self.add("video with damaged packets (beside a whole one)", r.text(None, f"faces: {n}"), ok)

        empty = ds / "shots.txt"
        empty.write_bytes(b"")
        r = run(["extract-faces", "-d", ds, "--from", src / "whole.mp4", "--shots", "shots.txt", "--to", "faces-shots"])
        # as any unusable shots file: the video is skipped with one line (the batch goes on, exit 0), or
        # the run refused; never read as a video without cuts
        run_faces = ds / "faces-shots" / "faces.parquet"
        read = run_faces.exists() and len(pd.read_parquet(run_faces)) > 0
        self.add("0-byte --shots file", r.text(None, f"video {'READ AS ONE SHOT' if read else 'not read'}"),
                 not r.traceback and r.nlines == 1 and "the shots file is empty" in r.err and not read
                 and (r.code == 0 and r.first.startswith("skipped: ") or r.code == 1))

    def read_only(self) -> None:
        where = self.tmp / "ro"
        where.mkdir()
        mounted = False
        if os.geteuid() == 0:  # root writes through chmod: a read-only mount is what stops it
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)],
                               capture_output=True, text=True)
            mounted = r.returncode == 0
            if not mounted:
                for what in ("identify", "label-clusters", "cluster (a write command)"):
                    self.add(f"read-only dataset: {what}", f"skipped: root, and no read-only mount here "
                             f"({r.stderr.strip() or 'mount failed'})", True)
                return
        ds = where / "ds"
        shutil.copytree(self.base, ds, symlinks=True)
        how = "read-only mount" if mounted else "chmod -R a-w"
        if mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        else:
            subprocess.run(["chmod", "-R", "a-w", str(ds)], check=True)
        try:
            before = digest(ds)
            for what, args in (("identify", ["identify", "-d", ds, "--refs", self.refs]),
                               ("identify --to a file outside it", ["identify", "-d", ds, "--refs", self.refs,
                                                                    "--to", self.tmp / "ro-ids.csv"]),
                               ("label-clusters", ["label-clusters", "-d", ds, "--refs", self.refs]),
                               ("cluster --to again (a write command)", ["cluster", "-d", ds, "--to", "again"])):
                r = run(args)
                lost = digest(ds) != before
                ok = not r.traceback and not lost and (r.code == 0 or one_line_refusal(r, "read-only"))
                self.add(f"read-only dataset ({how}): {what}", r.text(lost), ok)
        finally:
            if mounted:
                subprocess.run(["umount", "-l", str(where)], check=False)
            else:
                subprocess.run(["chmod", "-R", "u+w", str(ds)], check=False)

    def annotations(self) -> None:
        ds = self.copy("ann")
        path = ds / "annotations.jsonl"
        good = path.read_bytes()
        code = ("import sys\nfrom crowdsort.review.opening import open_review\n"
                "from crowdsort.storage.store import DamagedFileError\n"
                "try:\n    s = open_review(sys.argv[1], progress=False)\n"
                "except DamagedFileError as e:\n    sys.exit(f'crowdsort dashboard: {e}')\n"
                "print(len(s.ann.names))\n")
        for line in (b'{"id": "x", "names": ["f01"]}', b'{"id": "x", "rejected": 5}', b'[{"id": "x"}]',
                     b'{"id": 7}'):
            path.write_bytes(good + line + b"\n")
            damaged = path.read_bytes()
            t = time.perf_counter()
            p = subprocess.run(["nice", sys.executable, "-c", code, str(ds)], capture_output=True, text=True,
                               timeout=300)
            r = Res(p.returncode, p.stdout, p.stderr, time.perf_counter() - t)
            lost = path.read_bytes() != damaged
            ok = one_line_refusal(r, "annotations.jsonl", ".bak") and not lost
            self.add(f"annotations.jsonl line {line.decode()} (the dashboard's open_review)", r.text(lost), ok)
        path.write_bytes(good)

    def non_utf8_refs(self) -> None:
        ds = self.copy("refs8")
        refs = self.tmp / "refs-latin1"
        shutil.copytree(self.refs, refs)
        os.rename(refs / "grace_hopper", os.fsencode(refs) + b"/Gr\xe2ce Hopper")  # Latin-1 â: no UTF-8
        r = run(["identify", "-d", ds, "--refs", refs, "--to", self.tmp / "ids-latin1.csv"])
        self.add("identify --refs with a non-UTF-8 folder name", r.text(),
                 not r.traceback and (r.code == 0 or one_line_refusal(r)))
        r = run(["label-clusters", "-d", ds, "--refs", refs, "--to", self.tmp / "labels-latin1.csv"])
        self.add("label-clusters --refs with a non-UTF-8 folder name", r.text(),
                 not r.traceback and (r.code == 0 or one_line_refusal(r)))

    def assignments(self) -> None:
        import pandas as pd

        ds = self.copy("assign")
        path = ds / "cluster" / "assignments.csv"
        good = path.read_bytes()
        table = pd.read_csv(path, dtype={"face_id": str})
        edits = {
            "no cluster column": table.drop(columns=["cluster"]).to_csv(index=False).encode(),
            "a word for a cluster": table.assign(cluster=table["cluster"].astype(object).where(
                table.index != 3, "bob")).to_csv(index=False).encode(),
            "an unknown face id": table.assign(face_id=table["face_id"].where(table.index != 1, "nobody"))
            .to_csv(index=False).encode(),
            "empty (0 bytes)": b"",
            "latin-1": good.replace(b"face_id", "face_id\u00e9".encode("latin-1"), 1),
        }
        for what, content in edits.items():
            path.write_bytes(content)
            r = run(["apply-labels", "-d", ds, "--labels", self.names, "--to", self.tmp / "edited.csv"])
            self.add(f"hand-edited assignments.csv, {what}: apply-labels", r.text(),
                     one_line_refusal(r, str(path)))
        path.write_bytes(good)

    def formulas(self) -> None:
        ds = self.copy("formulas")
        bad = []
        for i, pair in enumerate((("=1+1", "+SUM(A1)"), ("-2+3", "@cmd"))):
            names = self.tmp / f"formula-names-{i}.csv"
            with open(names, "w", newline="") as f:
                csv.writer(f).writerows([("label", "cluster"), (pair[0], 0), (pair[1], 1)])
            out, exp = self.tmp / f"formula-{i}.csv", ds / f"formula-export-{i}"
            r = run(["apply-labels", "-d", ds, "--labels", names, "--to", out, "--export", exp])
            if r.code != 0 or r.traceback:
                self.add(f"CSV export of names {pair}", r.text(), False)
                return
            for table in (out, exp / "labels.csv"):
                got = set(cells(table, "label")) if table.exists() else set()
                bad += [c for c in got if c[:1] in "=+-@"]
                if not table.exists():
                    bad.append(f"{table.name} not written")
        self.add("apply-labels --to/--export of names =1+1, +SUM(A1), -2+3, @cmd",
                 f"exit 0; cells starting with = + - @: {bad or 'none'} (quoted with ')", not bad)
        # a person named like a formula in the reference folder, through label-clusters
        refs = self.tmp / "refs-formula"
        shutil.copytree(self.refs, refs)
        (refs / "grace_hopper").rename(refs / "=HYPERLINK(\"http:\")")
        (refs / "eileen_collins").rename(refs / "@cmd")
        out = self.tmp / "formula-lc.csv"
        r = run(["label-clusters", "-d", ds, "--refs", refs, "--to", out, "--threshold", "2", "--margin", "0"])
        got = [c for c in cells(out, "label") if c[:1] in "=+-@"] if out.exists() else ["not written"]
        self.add("label-clusters with people named =HYPERLINK(…), @cmd", r.text(None, f"formula cells: {got or 'none'}"),
                 r.code == 0 and not r.traceback and not got)

    def config(self) -> None:
        ds = self.copy("config")
        conf = self.tmp / "conf"
        conf.mkdir()
        for what, content, needle in (
                ("a section written as a key (efficientnet = \"x\")", b'efficientnet = "x"\n', "[efficientnet]"),
                ("not UTF-8 (Latin-1)", '[efficientnet]\nweights = "Caf\u00e9.pth"\n'.encode("latin-1"), "UTF-8")):
            path = conf / f"{len(what)}.toml"
            path.write_bytes(content)
            r = run(["cluster", "-d", ds, "--model", "efficientnet", "--from", "images/*", "--to", "imgs"],
                    env={"CROWDSORT_CONFIG": str(path)})
            self.add(f"config file {what}: cluster --model efficientnet", r.text(),
                     one_line_refusal(r, str(path), needle) and not (ds / "imgs").exists())

    def ray(self) -> None:
        try:
            import ray  # noqa: F401
        except ImportError as e:
            self.add("stale Ray cluster file", f"skipped: ray not importable ({e})", True)
            return
        ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths stay under 107 bytes
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:59999")
        env = {"RAY_TMPDIR": str(ray_tmp), "RAY_ADDRESS": ""}
        img = self.tmp / "ray-in"
        img.mkdir()
        shutil.copy(self.base / "images" / "grace_hopper" / "grace_hopper_01.jpg", img)
        try:
            r = run(["extract-faces", "-d", self.tmp / "ray-ds", "--from", img, "--backend", "ray",
                     "--ray-address", "127.0.0.1:59999"], env=env, timeout=90)
            self.add("extract-faces --backend ray --ray-address 127.0.0.1:59999 (nothing there)", r.text(),
                     one_line_refusal(r, "127.0.0.1:59999") and r.s < 30)
            r = run(["extract-faces", "-d", self.tmp / "ray-ds2", "--from", img, "--backend", "ray", "--workers", "1"],
                    env=env, timeout=150)
            # the leftover file must not be followed: a local cluster of its own, or a quick refusal naming it
            ok = not r.traceback and r.code is not None and (
                r.code == 0 or (one_line_refusal(r, "127.0.0.1:59999") and r.s < 30))
            self.add("extract-faces --backend ray, stale RAY_TMPDIR/ray/ray_current_cluster naming 127.0.0.1:59999",
                     r.text(), ok)
        finally:
            shutil.rmtree(ray_tmp, ignore_errors=True)

    def dashboard(self) -> None:
        from crowdsort.cli import Dashboard

        lan = next((h for h in Dashboard.host_names("0.0.0.0") if not Dashboard.is_local(h.strip("[]"))
                    and all(c.isdigit() or c == "." for c in h)), None)
        if lan is None:
            self.add("dashboard --address 0.0.0.0: /components/ without the token", "skipped: no address but loopback",
                     True)
            return
        mod = self.tmp / "mods"
        mod.mkdir()
        marker = self.tmp / "imported"
        (mod / "crowdsort_probe32.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass C:\n    css = ['x.css']\n")
        (mod / "x.css").write_text("p {}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(mod)]))}
        log = open(self.tmp / "dashboard.log", "w+")
        proc = subprocess.Popen(["nice", *CLI, "dashboard", str(self.base), "--address", "0.0.0.0", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
        try:
            base = f"http://{lan}:{port}"
            deadline, up = time.time() + 120, False
            while time.time() < deadline and proc.poll() is None:
                try:
                    with socket.create_connection((lan, port), timeout=2):
                        up = True
                        break
                except OSError:
                    time.sleep(0.5)
            if not up:
                log.seek(0)
                self.add("dashboard --address 0.0.0.0: /components/ without the token",
                         f"server did not start: {(log.read().strip().splitlines() or ['?'])[-1]}", False)
                return

            def status(url):
                try:
                    with urllib.request.urlopen(url, timeout=120) as r:
                        return r.status
                except urllib.error.HTTPError as e:
                    return e.code

            got = {route: status(base + route) for route in ("/components/crowdsort_probe32/C/css/x.css",
                                                             "/components/panel/x/y/z", "/app", "/static/js/bokeh.min.js")}
            imported = marker.exists()
            ok = all(c == 403 for c in got.values()) and not imported
            self.add(f"dashboard --address 0.0.0.0, from {lan} without the token",
                     f"HTTP {', '.join(f'{r} {c}' for r, c in got.items())}; probe module "
                     f"{'IMPORTED' if imported else 'not imported'}", ok)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def cli_rows(tmp: Path) -> list[tuple[str, str, float, bool]]:
    """``(case, what happened, nan, ok)`` for issue 32's cases, run in ``tmp``."""
    tmp.mkdir(parents=True, exist_ok=True)
    p = Probe(tmp)
    try:
        p.build()
    except Exception as e:
        return [("CLI: building the dataset", f"probe failed: {e}", NAN, False)]
    for kind, fn in (("moved/copied dataset", p.moved_and_copied), ("output files", p.outputs_never_replace),
                     ("another folder", p.from_another_folder), ("video", p.video), ("read-only", p.read_only),
                     ("annotations", p.annotations), ("non-UTF-8 refs", p.non_utf8_refs),
                     ("assignments.csv", p.assignments), ("CSV formulas", p.formulas), ("config", p.config),
                     ("ray", p.ray), ("dashboard", p.dashboard)):
        p.guard(kind, fn)
    return p.rows


def main() -> None:
    sys.path[:0] = [str(ROOT / "benchmarks")]
    from probe_bad_inputs import print_table

    with tempfile.TemporaryDirectory(prefix="cli-cases-") as tmp:
        rows = cli_rows(Path(tmp))
    print_table(rows, ("case", "what happened", "peak RSS MB", "verdict"))
    print(f"\n{len(rows)} cases, {sum(not r[3] for r in rows)} DEFECT (T: the probe's temporary folder)")


if __name__ == "__main__":
    main()
