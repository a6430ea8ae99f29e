"""Build a reference library from Wikidata: each person's image (P18) from Wikimedia Commons.

``people.txt``: one person per line starting with a Wikidata id (``Q76 Barack Obama``); other
lines and ``#`` comments are ignored. Each image lands in ``REFDIR/<Qid>/`` with a JSON
sidecar recording where it came from and under which licence. Existing images are kept, so
an interrupted build resumes.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import __version__
from ..storage.store import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

USER_AGENT = (f"crowdsort/{__version__} (reference library builder; "
              "https://github.com/crowdsort/crowdsort) python-urllib")
WIKIDATA_URL = "https://www.wikidata.org"
COMMONS_URL = "https://commons.wikimedia.org"
QID = re.compile(r"^\s*(Q\d+)\b(.*)$")


def read_people(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(qid, rest of line)`` for each line starting with a Wikidata id."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = QID.match(line)
        if m:
            out.append((m.group(1), m.group(2).strip()))
    if not out:
        raise ValueError(f"{path}: no line starts with a Wikidata id (e.g. 'Q76 Barack Obama')")
    return out


class Fetcher:
    """HTTP GET with a descriptive User-Agent and retries with backoff on 429/5xx and network errors."""

    def __init__(self, retries: int = 4, backoff: float = 1.0, timeout: float = 30.0):
        self.retries, self.backoff, self.timeout = retries, backoff, timeout

    def get(self, url: str) -> bytes:
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    return r.read()
            except urllib.error.HTTPError as e:
                if e.code not in (429, 500, 502, 503, 504) or attempt == self.retries:
                    raise
                wait = float(e.headers.get("Retry-After") or self.backoff * 2 ** attempt)
            except (urllib.error.URLError, TimeoutError) as e:
                if attempt == self.retries:
                    raise ConnectionError(f"{url}: {getattr(e, 'reason', e)} (no network? the reference "
                                          "library can also be built by hand: REFDIR/<name>/<image>.jpg)") from None
                wait = self.backoff * 2 ** attempt
            log.info("retrying %s in %.1f s", url, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def json(self, url: str) -> dict:
        return json.loads(self.get(url))


def person_image(qid: str, fetch: Fetcher, wikidata: str = WIKIDATA_URL) -> tuple[str | None, str]:
    """The Commons file name of ``qid``'s image (P18, preferred rank first) and its English label."""
    data = fetch.json(f"{wikidata}/wiki/Special:EntityData/{qid}.json")
    entity = data["entities"].get(qid) or next(iter(data["entities"].values()))  # redirects
    label = entity.get("labels", {}).get("en", {}).get("value", "")
    claims = entity.get("claims", {}).get("P18", [])
    claims = sorted(claims, key=lambda c: c.get("rank") != "preferred")
    for c in claims:
        value = c.get("mainsnak", {}).get("datavalue", {}).get("value")
        if value and c.get("rank") != "deprecated":
            return value, label
    return None, label


def commons_info(filename: str, fetch: Fetcher, commons: str = COMMONS_URL, width: int = 1024) -> dict:
    """Download URL (a ``width`` px thumbnail), page, licence and author of a Commons file."""
    q = urllib.parse.urlencode({"action": "query", "titles": f"File:{filename}", "prop": "imageinfo",
                                "iiprop": "url|extmetadata", "iiurlwidth": width, "format": "json"})
    pages = fetch.json(f"{commons}/w/api.php?{q}")["query"]["pages"]
    info = next(iter(pages.values()))["imageinfo"][0]
    meta = info.get("extmetadata", {})
    val = lambda k: re.sub(r"<[^>]+>", "", meta.get(k, {}).get("value", "")).strip()  # noqa: E731
    return {"url": info.get("thumburl") or info["url"], "original_url": info["url"],
            "page": info.get("descriptionurl", ""), "license": val("LicenseShortName"),
            "license_url": val("LicenseUrl"), "artist": val("Artist"), "credit": val("Credit")}


def build_references(people_file: str | os.PathLike, refdir: str | os.PathLike, fetch: Fetcher | None = None,
                     wikidata: str | None = None, commons: str | None = None) -> dict:
    """Fetch each listed person's image into ``refdir/<Qid>/``; returns counts and problems."""
    from tqdm.auto import tqdm

    fetch = fetch or Fetcher()
    wikidata = wikidata or os.environ.get("CROWDSORT_WIKIDATA_URL", WIKIDATA_URL)
    commons = commons or os.environ.get("CROWDSORT_COMMONS_URL", COMMONS_URL)
    refdir = Path(refdir)
    summary = {"fetched": 0, "present": 0, "no_image": [], "failed": []}
    for qid, note in tqdm(read_people(people_file), unit="person", desc="wikidata"):
        folder = refdir / qid
        if folder.is_dir() and any(folder.glob("*.json")):
            summary["present"] += 1
            continue
        try:
            filename, label = person_image(qid, fetch, wikidata)
            if filename is None:
                summary["no_image"].append(qid)
                log.warning("%s (%s): no image (P18) on Wikidata", qid, label or note)
                continue
            info = commons_info(filename, fetch, commons)
            data = fetch.get(info["url"])
            suffix = Path(urllib.parse.urlparse(info["url"]).path).suffix.lower() or ".jpg"
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(filename).stem)[:80] + suffix
            atomic_write_bytes(folder / name, data)
            atomic_write_text(folder / (name + ".json"), json.dumps(
                {"qid": qid, "label": label, "note": note, "file": filename, **info,
                 "retrieved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
            summary["fetched"] += 1
        except Exception as e:  # one person's failure does not stop the list
            summary["failed"].append(f"{qid}: {e}")
            log.warning("%s: %s", qid, e)
    return summary
