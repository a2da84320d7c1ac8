"""The embedded offline demo corpus: deterministic, synthetic, English-like text.

`autoresearch prepare --dataset demo` writes it; nothing is downloaded and no third-party text is bundled. Every word
is built here from syllables, so the corpus is ours and the same seed always gives the same bytes.

The text has structure at several ranges, so that a tiny GPT trained for a minute lands far below the byte-unigram
entropy, and a better model keeps finding more to learn:
- a lexicon of a few thousand generated words (names, places, nouns, verbs, adjectives) with Zipf-like frequencies,
  verb-object and adjective-noun collocations, and per-animal "facts" that hold across documents;
- a small grammar: subject-verb-object sentences, prepositional phrases, subordinate and relative clauses, dialogue;
- agreement: a/an, singular/plural nouns and verbs (is/are, was/were, eats/eat), and pronouns (she/he/they, her/his/
  their) that agree with a protagonist introduced at the top of a story, possibly thousands of words earlier;
- numbers that check: "had 3 x. Then she got 4 more, so she had 7 xs", ages = year - birth year, years increasing
  through a document, numbered lists 1., 2., 3. whose announced count or total matches their items;
- documents from a few sentences to a few thousand words (titles, chapters, paragraphs separated by blank lines).

Run directly to write a corpus and print its size and generation time:
    python -m common.demo /tmp/demo_text
"""

from __future__ import annotations

import bisect
import os
import pathlib
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# Seed streams: the lexicon, the train documents and the val documents each draw from their own numpy stream, so
# val shares train's distribution (same lexicon, same grammar) without sharing a single document.
_LEXICON_STREAM, _TRAIN_STREAM, _VAL_STREAM = 0, 1, 2

# Real English glue words; generated words must never collide with these (or the agreement tests could not parse).
_FUNCTION_WORDS = frozenset(
    """a an the and or but so of in on at to for with from by as is are was were be am has have had not no it its
    he him his she her they them their we our you your i my me this that these those who which when while after
    before because although if then there what one two three four five six seven eight nine ten all some many most
    each every more left said met went gave got found bought received made lost sold away thing things people town
    kinds kind years old born lived very quite rather always never later next day morning end chapter steps need
    into over under near behind beside across through upon around about that less full""".split()
)
_ONSETS = "b bl br c ch cl cr d dr f fl fr g gl gr h j k l m n p pl pr qu r s sc sh sk sl sm sn sp st str t th tr v w z".split()
_MID_ONSETS = "b c d f g h k l m n p r s t v w z".split()
_VOWELS = "a e i o u a e i o u ai ea ee oo ou oa ie".split()
_CODAS = ["", "", "", "n", "r", "l", "s", "m", "t", "nd", "nt", "st", "rn", "ck", "sh", "ng", "rd", "lt"]
_ADJ_SUFFIXES = ["", "", "", "ish", "ous", "ful", "y", "ic", "en", "al", "less"]
_PLACE_SUFFIXES = ["", "", "ia", "ton", "mar", "heim", "dor", "wick", "by"]
_PREPS = ["in", "on", "under", "near", "behind", "beside", "across", "through", "over", "with"]
_NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_PRONOUNS = {"f": ("she", "her", "her"), "m": ("he", "him", "his"), "p": ("they", "them", "their")}


# ---------------------------------------------------------------------------------------------------------------------
# Random draws


class _Rand:
    """Uniform draws from a numpy Generator, fetched in blocks: one numpy call per draw would cost ~1 us each."""

    __slots__ = ("_rng", "_buf", "_i")

    def __init__(self, rng: np.random.Generator):
        self._rng, self._buf, self._i = rng, [], 0

    def u(self) -> float:
        i = self._i
        if i == len(self._buf):
            self._buf, i = self._rng.random(2048).tolist(), 0
        self._i = i + 1
        return self._buf[i]

    def chance(self, p: float) -> bool:
        return self.u() < p

    def between(self, lo: int, hi: int) -> int:  # inclusive
        return lo + int(self.u() * (hi - lo + 1))

    def pick(self, seq: Sequence):
        return seq[int(self.u() * len(seq))]


class _Zipf:
    """A fixed list drawn with probability ~ 1 / (rank + b)^a, like word frequencies in real text."""

    def __init__(self, items: Sequence, a: float = 1.05, b: float = 2.0):
        w = 1.0 / (np.arange(len(items)) + b) ** a
        self.items = list(items)
        self.cdf = (np.cumsum(w) / w.sum()).tolist()
        self._last = len(self.items) - 1

    def draw(self, r: _Rand):
        return self.items[min(bisect.bisect_right(self.cdf, r.u()), self._last)]

    def __len__(self) -> int:
        return len(self.items)


# ---------------------------------------------------------------------------------------------------------------------
# Lexicon


def _plural(w: str) -> str:  # also the 3rd-person-singular verb ending
    return w + "es" if w.endswith(("s", "sh", "ch", "x", "z")) else w + "s"


def _past(w: str) -> str:
    return w + "d" if w.endswith("e") else w + "ed"


def _ing(w: str) -> str:
    return w[:-1] + "ing" if w.endswith("e") and not w.endswith(("ee", "ie", "oe")) else w + "ing"


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


@dataclass(eq=False)
class Noun:
    sg: str
    pl: str
    adjs: tuple[str, ...] = ()  # favoured adjectives (collocations)

    def n(self, k: int) -> str:
        return self.sg if k == 1 else self.pl


@dataclass(eq=False)
class Verb:
    base: str
    s: str  # 3rd person singular present
    past: str
    ing: str
    objs: tuple[Noun, ...] = ()  # favoured objects (collocations); empty for intransitive verbs


@dataclass(eq=False)
class Animal:
    noun: Noun
    food: tuple[Noun, Noun]  # facts that hold in every document that describes this animal
    home: Noun
    colour: str
    eats: Verb


@dataclass(eq=False)
class Lexicon:
    names: _Zipf  # of str
    gender: dict[str, str]  # name -> "f" | "m"
    places: _Zipf
    people: _Zipf  # of Noun: roles such as farmer, teacher
    animals: _Zipf  # of Animal
    things: _Zipf  # of Noun: countable objects
    habitats: _Zipf  # of Noun
    tverbs: _Zipf  # of Verb, transitive
    iverbs: _Zipf  # of Verb, intransitive
    adjs: _Zipf  # of str
    nouns: list[Noun] = field(default_factory=list)  # every common noun, for tests
    verbs: list[Verb] = field(default_factory=list)  # every verb, for tests


def _syllables(r: _Rand, n: int) -> str:
    parts = []
    for k in range(n):
        onset = r.pick(_ONSETS) if k == 0 else r.pick(_MID_ONSETS)
        if k == 0 and r.chance(0.15):
            onset = ""
        coda = r.pick(_CODAS) if k == n - 1 or r.chance(0.25) else ""
        parts.append(onset + r.pick(_VOWELS) + coda)
    return "".join(parts)


def build_lexicon(seed: int) -> Lexicon:
    """The generated vocabulary: deterministic from the seed, every word form distinct from every other."""
    r = _Rand(np.random.default_rng([seed, _LEXICON_STREAM]))
    used: set[str] = set(_FUNCTION_WORDS)

    def fresh(make: Callable[[], tuple[str, ...]]) -> tuple[str, ...]:
        # Disjoint forms keep the text unambiguous: a noun plural never doubles as a verb form, so agreement is checkable.
        while True:
            forms = make()
            keys = [f.lower() for f in forms]
            if len(set(keys)) == len(keys) and not used.intersection(keys) and all(len(k) > 2 for k in keys):
                used.update(keys)
                return forms

    def nsyl(*weights: float) -> int:
        u, acc = r.u(), 0.0
        for k, w in enumerate(weights, start=1):
            acc += w
            if u < acc:
                return k
        return len(weights)

    def noun() -> Noun:
        sg = fresh(lambda: (s := _syllables(r, nsyl(0.45, 0.45, 0.1)), _plural(s)))
        return Noun(sg[0], sg[1])

    def verb() -> Verb:
        b = fresh(lambda: (s := _syllables(r, nsyl(0.55, 0.45)), _plural(s), _past(s), _ing(s)))
        return Verb(*b)

    def proper(suffixes: Sequence[str]) -> str:
        return fresh(lambda: (_cap(_syllables(r, nsyl(0, 0.7, 0.3)) + r.pick(suffixes)),))[0]

    names = [proper([""]) for _ in range(500)]
    gender = {name: ("f" if r.chance(0.5) else "m") for name in names}
    places = [proper(_PLACE_SUFFIXES) for _ in range(200)]
    adjs = [fresh(lambda: (_syllables(r, nsyl(0.6, 0.4)) + r.pick(_ADJ_SUFFIXES),))[0] for _ in range(500)]
    adjs = _Zipf(adjs, a=1.0, b=6.0)  # flatter head: no adjective should be one word in ten
    people = [noun() for _ in range(120)]
    animal_nouns = [noun() for _ in range(250)]
    things = [noun() for _ in range(900)]
    habitats = [noun() for _ in range(60)]
    nouns = people + animal_nouns + things + habitats
    for n in nouns:
        n.adjs = tuple(adjs.draw(r) for _ in range(3))
    things_z, animals_nz = _Zipf(things), _Zipf(animal_nouns)
    tverbs = [verb() for _ in range(450)]
    for v in tverbs:
        pool = animals_nz if r.chance(0.2) else things_z
        v.objs = tuple(pool.draw(r) for _ in range(5))
    iverbs = [verb() for _ in range(200)]
    tverbs_z, habitats_z = _Zipf(tverbs), _Zipf(habitats)
    animals = [
        Animal(n, (things_z.draw(r), things_z.draw(r)), habitats_z.draw(r), adjs.draw(r), tverbs_z.draw(r))
        for n in animal_nouns
    ]
    return Lexicon(
        names=_Zipf(names, a=0.9),
        gender=gender,
        places=_Zipf(places),
        people=_Zipf(people),
        animals=_Zipf(animals),
        things=things_z,
        habitats=habitats_z,
        tverbs=tverbs_z,
        iverbs=_Zipf(iverbs),
        adjs=adjs,
        nouns=nouns,
        verbs=tverbs + iverbs,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Documents


class _Doc:
    """One document's generator: the lexicon, a random stream, and the state that must stay consistent (who the
    protagonist is, the current year, a town's population)."""

    def __init__(self, lex: Lexicon, r: _Rand):
        self.lex, self.r = lex, r
        self.year = 0
        self.words = 0

    # --- phrases ----------------------------------------------------------------------------------------------------

    def adj(self, noun: Noun | None = None) -> str:
        if noun is not None and self.r.chance(0.5):
            return self.r.pick(noun.adjs)
        return self.lex.adjs.draw(self.r)

    def np(self, noun: Noun, plural: bool = False, det: str | None = None, adj_p: float = 0.3) -> str:
        """A noun phrase: determiner, maybe an adjective, the noun in the right number, a/an agreeing."""
        r = self.r
        word = noun.pl if plural else noun.sg
        if r.chance(adj_p):
            word = f"{self.adj(noun)} {word}"
        if det is None:
            det = (
                r.pick(("the", "the", "some", "many", "the", r.pick(_NUMBER_WORDS)))
                if plural
                else r.pick(("the", "the", "a", "a", "this", "that"))
            )
        if det == "a":
            det = _an(word)
        return f"{det} {word}" if det else word

    def thing(self) -> Noun:
        return self.lex.things.draw(self.r)

    def obj(self, verb: Verb, poss: str | None = None) -> str:
        r = self.r
        noun = r.pick(verb.objs) if verb.objs and r.chance(0.6) else self.thing()
        if poss and r.chance(0.2):
            return self.np(noun, r.chance(0.3), det=poss)
        return self.np(noun, r.chance(0.3))

    def pp(self) -> str:
        r = self.r
        u = r.u()
        if u < 0.25:
            return f"{r.pick(('in', 'near', 'to', 'from'))} {self.lex.places.draw(r)}"
        noun = self.lex.habitats.draw(r) if u < 0.65 else self.thing()
        return f"{r.pick(_PREPS)} {self.np(noun, r.chance(0.25))}"

    def count(self) -> int:
        return self.r.between(1, 12) if self.r.chance(0.8) else self.r.between(10, 99)

    def present(self, topic: Animal | None = None) -> str:
        """A present-tense clause with subject-verb agreement (I am, we are, the x is, the xs are, it eats, ...)."""
        r, lex = self.r, self.lex
        u = r.u()
        if u < 0.2:
            subj, form = r.pick(("I", "you", "we")), "base"
        else:
            plural = r.chance(0.5)
            noun = (
                topic.noun
                if topic and r.chance(0.6)
                else (lex.animals.draw(r).noun if r.chance(0.5) else self.thing())
            )
            if plural:
                det = r.pick(("the", "most", "many", "some", "all", "our", "", ""))
            else:
                det = r.pick(("the", "the", "a", "every", "each", "my", "this"))
            subj, form = self.np(noun, plural, det=det), ("base" if plural else "s")
        be = {"I": "am", "you": "are", "we": "are"}.get(subj, "are" if form == "base" else "is")
        has = "have" if form == "base" else "has"
        u = r.u()
        if u < 0.4:
            v = lex.tverbs.draw(r)
            return f"{subj} {getattr(v, form)} {self.obj(v)}"
        if u < 0.6:
            v = lex.iverbs.draw(r)
            return f"{subj} {getattr(v, form)} {self.pp()}"
        if u < 0.8:
            return f"{subj} {be} {r.pick(('', '', 'very ', 'not ', 'always ', 'quite '))}{self.adj()}"
        k = self.count()
        return f"{subj} {has} {k} {self.thing().n(k)}"

    def numbered(self, items: list[str]) -> str:
        return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))

    # --- stories (past tense; a protagonist and the pronouns that agree with it) ------------------------------------

    def story(self, target: int) -> str:
        r, lex = self.r, self.lex
        name = lex.names.draw(r)
        if r.chance(0.15):
            other = lex.names.draw(r)
            while other == name:
                other = lex.names.draw(r)
            self.name, self.g = f"{name} and {other}", "p"
        else:
            self.name, self.g = name, lex.gender[name]
        self.subj, self.objp, self.poss = _PRONOUNS[self.g]
        self.was = "were" if self.g == "p" else "was"
        self.born = r.between(1600, 1950)
        self.year = self.born
        self.home = lex.places.draw(r)
        self.role = lex.people.draw(r)
        self.animal = lex.animals.draw(r).noun  # a companion that recurs through the story
        self.treasure = self.thing()

        title = r.pick(
            (
                f"{name} and the {_cap(self.adj(self.treasure))} {_cap(self.treasure.sg)}",
                f"The {_cap(self.treasure.sg)} of {self.home}",
                f"A Tale of {self.home}",
                f"{name} in {lex.places.draw(r)}",
            )
        )
        role = self.np(self.role, self.g == "p", det="a" if self.g != "p" else "", adj_p=0.6)
        intro = [
            f"{self.name} {self.was} {role} who lived in {self.home}.",
            f"{_cap(self.subj)} {self.was} born in {self.born}.",
            f"{_cap(self.poss)} {self.animal.sg} went everywhere with {self.objp}.",
        ]
        intro += [self.story_sentence() for _ in range(r.between(1, 4))]
        paras = [" ".join(intro)]
        self.words = sum(p.count(" ") + 1 for p in paras)
        chapter = 1
        long = target > 1500
        if long:
            paras.insert(0, "Chapter 1")
        while self.words < target:
            if long and len(paras) % 8 == 0:
                chapter += 1
                paras.append(f"Chapter {chapter}")
            para = self.story_paragraph()
            self.words += para.count(" ") + 1
            paras.append(para)
        paras.append(
            r.pick(
                (
                    f"In the end, {self.name} went back to {self.home}, and {self.subj} never forgot the {self.treasure.sg}.",
                    "The end.",
                    f"And that is the story of {self.name}.",
                )
            )
        )
        return title + "\n\n" + "\n\n".join(paras)

    def s(self) -> str:
        """The protagonist as a subject: mostly the pronoun, sometimes the name (long-range agreement)."""
        return self.name if self.r.chance(0.15) else self.subj

    def other(self) -> tuple[str, bool]:
        """Someone else as a subject, and whether it is plural. Only the protagonist is ever a pronoun."""
        r = self.r
        u = r.u()
        if u < 0.4:
            return self.lex.names.draw(r), False
        if u < 0.55:
            return f"{self.poss} {self.animal.sg}", False
        plural = r.chance(0.4)
        return self.np(self.lex.people.draw(r), plural, det="the", adj_p=0.2), plural

    def story_paragraph(self) -> str:
        r = self.r
        sents = []
        if r.chance(0.5) and self.year - self.born < 85:
            self.year += r.between(1, 6)
            age = self.year - self.born
            v = self.lex.tverbs.draw(r)
            if r.chance(0.5):
                sents.append(
                    f"In {self.year}, when {self.s()} {self.was} {age} years old, {self.subj} {v.past} {self.obj(v, self.poss)}."
                )
            else:
                sents.append(f"In {self.year}, {self.s()} {self.lex.iverbs.draw(r).past} {self.pp()}.")
        else:
            sents.append(
                _cap(
                    f"{r.pick(('later', 'one day', 'the next morning', 'after that'))}, {self.s()} went to {self.lex.places.draw(r)}."
                )
            )
        sents += [self.story_sentence() for _ in range(r.between(2, 7))]
        return " ".join(sents)

    def story_sentence(self) -> str:
        r, lex = self.r, self.lex
        k = int(r.u() * 15)
        if k == 0:
            v = lex.tverbs.draw(r)
            return _cap(f"{self.s()} {v.past} {self.obj(v, self.poss)} {self.pp()}.")
        if k == 1:
            return _cap(f"{self.s()} {lex.iverbs.draw(r).past} {self.pp()}.")
        if k == 2:
            adv = r.pick(("", "", "very ", "quite ", "rather ", "not ", "always "))
            return _cap(f"{self.s()} {self.was} {adv}{self.adj()}.")
        if k == 3:
            conj = r.pick(("when", "after", "before", "because", "although"))
            o, _ = self.other()
            v = lex.tverbs.draw(r)
            return _cap(
                f"{conj} {self.s()} {lex.iverbs.draw(r).past} {self.pp()}, {o} {v.past} {self.obj(v)}."
            )
        if k == 4:
            role = lex.people.draw(r)
            v = lex.tverbs.draw(r)
            return _cap(f"{self.s()} met {self.np(role, det='a', adj_p=0.5)} who {v.past} {self.obj(v)}.")
        if k == 5:
            return _cap(
                f"{self.s()} met {lex.names.draw(r)}, {self.np(lex.people.draw(r), det='a')} from {lex.places.draw(r)}."
            )
        if k == 6:
            plural = r.chance(0.3)
            noun = self.treasure if r.chance(0.3) else self.thing()
            return _cap(
                f"{self.poss} {noun.pl if plural else noun.sg} {'were' if plural else 'was'} {self.adj(noun)}."
            )
        if k == 7:
            plural = r.chance(0.4)
            noun = self.thing()
            be = "were" if plural else "was"
            return _cap(f"{self.s()} thought that {self.np(noun, plural)} {be} {self.adj(noun)}.")
        if k == 8:
            clause = _cap(self.present())
            if r.chance(0.5):
                return f'"{clause}," said {lex.names.draw(r)}.'
            return f'"{clause}," {self.s()} said.'
        if k == 9:
            o, plural = self.other()
            v = lex.iverbs.draw(r)
            return _cap(f"{self.s()} {self.was} {v.ing} {self.pp()} when {o} {lex.iverbs.draw(r).past}.")
        if k == 10:
            o, _ = self.other()
            return _cap(f"{o} gave {self.objp} {self.np(self.thing(), det='a')}.")
        if k == 11:
            return self.arithmetic()
        if k == 12:
            return _cap(f"{self.s()} found {self.poss} {self.treasure.sg} {self.pp()}.")
        if k == 13:
            o, plural = self.other()
            return _cap(
                f"{o} {'were' if plural else 'was'} {self.adj()}, but {self.subj} {self.was} {self.adj()}."
            )
        v = lex.tverbs.draw(r)
        return _cap(f"{self.s()} and {lex.names.draw(r)} {v.past} {self.obj(v)} together.")

    def arithmetic(self) -> str:
        r = self.r
        noun, s = self.thing(), self.subj
        u = r.u()
        if u < 0.45:
            n, m = self.count(), self.count()
            verb = r.pick(("got", "found", "bought", "received", "made"))
            return _cap(
                f"{self.s()} had {n} {noun.n(n)}. Then {s} {verb} {m} more, so {s} had {n + m} {noun.n(n + m)}."
            )
        if u < 0.8:
            n = r.between(2, 40)
            m = r.between(1, n - 1)
            verb = r.pick(("lost", "sold", "gave away"))
            to = f" to {self.lex.names.draw(r)}" if verb == "gave away" and r.chance(0.5) else ""
            return _cap(
                f"{self.s()} had {n} {noun.n(n)}, but {s} {verb} {m} of them{to}, so {s} had {n - m} left."
            )
        box = self.lex.habitats.draw(r) if r.chance(0.2) else self.thing()
        a, b = r.between(2, 9), r.between(2, 12)
        return _cap(f"{self.s()} had {a} {box.pl} with {b} {noun.pl} in each, so {s} had {a * b} {noun.pl}.")

    # --- encyclopedia entries (present tense; facts that hold across documents) -------------------------------------

    def entry(self, target: int) -> str:
        r, lex = self.r, self.lex
        a = lex.animals.draw(r)
        n = a.noun
        title = r.pick((f"The {_cap(n.sg)}", f"{_cap(n.pl)}", f"About the {_cap(n.sg)}"))
        first = [
            f"The {n.sg} is {_an(a.colour)} {a.colour} animal that lives in {a.home.pl} near {lex.places.draw(r)}.",
            f"It {a.eats.s} {a.food[0].pl} and {a.food[1].pl}.",
            f"{_cap(n.pl)} are usually {a.colour}, and a young {n.sg} is {self.adj(n)}.",
        ]
        paras = [" ".join(first)]
        self.words = len(paras[0].split())
        while self.words < target:
            u = r.u()
            if u < 0.1:
                k = r.between(2, 6)
                items = []
                for _ in range(k):
                    v = lex.tverbs.draw(r)
                    items.append(f"The {self.adj(n)} {n.sg}, which {v.s} {self.obj(v)}.")
                para = f"There are {k} kinds of {n.pl}:\n" + self.numbered(items)
            elif u < 0.2:
                para = (
                    f"Like every {n.sg}, the {self.adj(n)} {n.sg} {a.eats.s} {a.food[r.between(0, 1)].pl}. "
                    f"A {n.sg} that {a.eats.s} nothing is {self.adj()}, but most {n.pl} are {a.colour}."
                )
            else:
                sents = [_cap(self.present(a)) + "." for _ in range(r.between(3, 7))]
                if r.chance(0.3):
                    sents.append(f"{_cap(n.pl)} {a.eats.base} {a.food[r.between(0, 1)].pl}.")
                para = " ".join(sents)
            self.words += para.count(" ") + 1
            paras.append(para)
        return title + "\n\n" + "\n\n".join(paras)

    # --- chronicles (past tense; years increase, population arithmetic) ---------------------------------------------

    def chronicle(self, target: int) -> str:
        r, lex = self.r, self.lex
        place = lex.places.draw(r)
        title = r.pick((f"A History of {place}", f"{place}: A Short History", f"The Chronicle of {place}"))
        self.year = r.between(1000, 1500)
        self.pop = r.between(10, 300)
        founder = lex.names.draw(r)
        first = [
            f"{place} was founded in {self.year} by {founder}, {self.np(lex.people.draw(r), det='a', adj_p=0.5)} from {lex.places.draw(r)}.",
            f"At first the town had {self.pop} people.",
        ]
        paras = [" ".join(first)]
        self.words = len(paras[0].split())
        while self.words < target:
            sents = []
            for _ in range(r.between(1, 4)):
                self.year += r.between(1, 12)
                sents.append(self.event(place))
            para = " ".join(sents)
            self.words += para.count(" ") + 1
            paras.append(para)
        return title + "\n\n" + "\n\n".join(paras)

    def event(self, place: str) -> str:
        r, lex = self.r, self.lex
        y = self.year
        k = int(r.u() * 7)
        if k == 0:
            m = r.between(1, 200)
            self.pop += m
            return f"In {y}, {m} more people came, so the town had {self.pop} people."
        if k == 1 and self.pop > 20:
            m = r.between(1, self.pop // 3)
            self.pop -= m
            return f"In {y}, {m} people left, so the town had {self.pop} people."
        if k == 2:
            return f"In {y}, {lex.names.draw(r)} became the {lex.people.draw(r).sg} of {place}."
        if k == 3:
            return f"In {y}, the people of {place} built {self.np(self.thing(), det='a', adj_p=0.6)} {self.pp()}."
        if k == 4:
            v = lex.tverbs.draw(r)
            plural = r.chance(0.6)
            subj = self.np(lex.animals.draw(r).noun, plural, det="the" if plural else "a", adj_p=0.5)
            return f"In {y}, {subj} {v.past} the {self.thing().pl} of the town."
        if k == 5:
            plural = r.chance(0.5)
            role = lex.people.draw(r)
            return f"In {y}, the {role.pl if plural else role.sg} of {place} {'were' if plural else 'was'} {self.adj(role)}."
        v = lex.tverbs.draw(r)
        return f"In {y}, {lex.names.draw(r)} {v.past} {self.obj(v)} {self.pp()}."

    # --- how-to lists (imperatives; numbered items whose counts add up) -----------------------------------------

    def howto(self, target: int) -> str:
        r, lex = self.r, self.lex
        v = lex.tverbs.draw(r)
        goal = self.thing() if not v.objs or r.chance(0.4) else r.pick(v.objs)
        adj = self.adj(goal)
        title = f"How to {_cap(v.base)} {_cap(_an(adj))} {_cap(adj)} {_cap(goal.sg)}"
        paras = [
            f"{_cap(goal.pl)} are {self.adj(goal)} and {self.adj(goal)}, so it is best to {v.base} them with care. "
            + _cap(self.present())
            + "."
        ]
        counts = [self.count() for _ in range(r.between(3, 7))]
        items = [f"{k} {self.thing().n(k)}" for k in counts]
        paras.append("You will need:\n" + self.numbered(items) + f"\nThat is {sum(counts)} things in all.")
        self.words = sum(p.count(" ") + 1 for p in paras)
        steps = []
        while self.words < target or len(steps) < 3:
            w = lex.tverbs.draw(r)
            step = _cap(f"{w.base} {self.obj(w)} {self.pp()}.")
            if r.chance(0.3):
                step = step[:-1] + f", and then {lex.iverbs.draw(r).base} {self.pp()}."
            steps.append(step)
            self.words += step.count(" ") + 2
        paras.append("Steps:\n" + self.numbered(steps))
        paras.append(
            f"If the {goal.sg} is too {self.adj(goal)}, {v.base} it again. When the {goal.pl} are {adj}, you are done."
        )
        return title + "\n\n" + "\n\n".join(paras)


# Document kinds and their lengths in words: lognormal (median, sigma), so most are short and a few run to thousands
# of words, longer than any context (the packer must split them).
_KINDS = (  # (probability, method, median words, sigma)
    (0.40, _Doc.story, 350, 0.95),
    (0.25, _Doc.entry, 220, 0.7),
    (0.20, _Doc.chronicle, 300, 0.95),
    (0.15, _Doc.howto, 90, 0.5),
)
_MAX_WORDS = 5000


def _document(lex: Lexicon, seed: int, stream: int, index: int) -> str:
    rng = np.random.default_rng([seed, stream, index])
    cdf = np.cumsum([k[0] for k in _KINDS])
    _, method, median, sigma = _KINDS[
        min(int(np.searchsorted(cdf, rng.random(), side="right")), len(_KINDS) - 1)
    ]
    target = int(min(median * rng.lognormal(0.0, sigma), _MAX_WORDS))
    return method(_Doc(lex, _Rand(rng)), max(target, 20))


def generate_documents(n_docs: int, seed: int, split: str = "train") -> list[str]:
    """n_docs documents of the train (or "val") split; document i depends only on (seed, split, i)."""
    stream = {"train": _TRAIN_STREAM, "val": _VAL_STREAM}[split]
    lex = build_lexicon(seed)
    return [_document(lex, seed, stream, i) for i in range(n_docs)]


# ---------------------------------------------------------------------------------------------------------------------
# Parquet shards


def _write_parquet(path: pathlib.Path, docs: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({"text": pa.array(docs, type=pa.string())}), tmp, compression="zstd")
    os.replace(tmp, path)  # readers never see a half-written shard


def write_demo_corpus(
    out_dir: pathlib.Path,
    seed: int = 1337,
    train_docs: int = 1700,
    val_docs: int = 300,
    docs_per_shard: int = 500,
) -> tuple[list[pathlib.Path], pathlib.Path]:
    """Writes parquet text shards (one document per row, column `text`, string type; zstd) named shard_00000.parquet
    ... and the val split as val.parquet, atomically (write .tmp then os.replace). Returns (train paths, val path).
    Idempotent: same seed => byte-identical text. The defaults give ~4.5 MB of train text and ~0.7 MB of val."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = generate_documents(train_docs, seed, "train")
    val = generate_documents(val_docs, seed, "val")
    paths = []
    for k, start in enumerate(range(0, train_docs, docs_per_shard)):
        path = out_dir / f"shard_{k:05d}.parquet"
        _write_parquet(path, train[start : start + docs_per_shard])
        paths.append(path)
    # Shards left from an earlier run with other sizes would silently join the training data.
    for stale in out_dir.glob("shard_*.parquet"):
        if re.fullmatch(r"shard_\d{5}\.parquet", stale.name) and stale not in paths:
            stale.unlink()
    val_path = out_dir / "val.parquet"
    _write_parquet(val_path, val)
    return paths, val_path


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "demo_text")
    t0 = time.perf_counter()
    train_paths, val_path = write_demo_corpus(out)
    dt = time.perf_counter() - t0
    import pyarrow.parquet as pq

    mb = [
        sum(len(t.encode()) for t in pq.read_table(p).column("text").to_pylist()) / 1e6
        for p in [*train_paths, val_path]
    ]
    print(
        f"wrote {len(train_paths)} train shards ({sum(mb[:-1]):.2f} MB) and val ({mb[-1]:.2f} MB) to {out} in {dt:.2f} s"
    )
