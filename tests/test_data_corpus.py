"""Demo corpus extraction: wiki markup stripping and deterministic splits (no download needed)."""

from __future__ import annotations



from flexbert.data.demo_corpus import _bucket, rotten_tomatoes
from flexbert.data.demo_sources import hamlet_scenes, strip_wiki_markup


def test_strip_wiki_markup():
    raw = (
        "{{Infobox person|name=X|born={{birth date|1900|1|1}}}}\n"
        "'''Ada''' was a [[mathematician]] and [[writer|author]].<ref>Smith 2001</ref> "
        "She worked on the [http://example.com engine].<ref name=\"a\"/>\n"
        "[[File:Ada.jpg|thumb|A portrait of [[Ada Lovelace|Ada]]]]\n"
        "== Early life ==\n* Born in [[London]]\n{| class=\"wikitable\"\n| cell\n|}\n"
        "<!-- hidden -->[[Category:Mathematicians]] &amp; more &lt;b&gt;bold&lt;/b&gt;"
    )
    out = strip_wiki_markup(raw)
    assert out.splitlines() == [
        "Ada was a mathematician and author. She worked on the engine.",
        "Early life",
        "Born in London",
        "& more bold",
    ]


def test_splits_are_deterministic_and_leak_free():
    csv = "category,text,movie_name,has_plot_and_reviews\n" + "\n".join(
        f"{c},review {i} of movie {i % 40},movie {i % 40},True" for i, c in enumerate(["fresh", "rotten", "plot"] * 200)
    )
    a, pre_a = rotten_tomatoes(csv)
    b, pre_b = rotten_tomatoes(csv)
    assert a == b and pre_a == pre_b
    assert sum(len(v) for v in a.values()) == 400  # plots are not labelled
    movies = {k: {r["text"].split()[-1] for r in v} for k, v in a.items()}
    assert not movies["train"] & movies["test"] and not movies["train"] & movies["validation"]
    held_out = {r["text"] for k in ("validation", "test") for r in a[k]}
    assert not held_out & set(pre_a)  # evaluation snippets never reach pretraining text
    assert all(0 <= _bucket(str(i)) < 100 for i in range(100))


def test_hamlet_scenes():
    text = "header\nACT I\nSCENE I. Elsinore.\n" + "line\n" * 50 + "SCENE II. A room.\n" + "more\n" * 50
    scenes = hamlet_scenes(text)
    assert len(scenes) == 2 and scenes[1].startswith("SCENE II")
