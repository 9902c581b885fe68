"""Per-language tables for the sentence chunker: abbreviations, sentence starters, months.

Abbreviations are keyed in lower case without their final dot (``"e.g"``, ``"sra"``).
Spaced forms (``p. ej.``, ``EE. UU.``, ``z. B.``) are pairs of such keys. What a dot
after an abbreviation means is its :class:`Abbrev` kind. Every language other than
English also gets the English tables as a fallback (its own entries win).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


class Abbrev(enum.Enum):
    """What a known abbreviation's dot means."""

    PREFIX = "prefix"  # never ends a sentence: Dr., e.g., Sra., z. B.
    NUMERIC = "numeric"  # goes on only when a number follows: No. 5, pág. 3, Fig. 2
    END = "end"  # may end one: etc., U.S., a.m.; ends it when a usual sentence start follows


@dataclass(frozen=True, slots=True)
class LanguageRules:
    """The tables the chunker consults for one language."""

    abbreviations: Mapping[str, Abbrev]
    pairs: Mapping[tuple[str, str], Abbrev]
    first_parts: frozenset[str]
    starters: frozenset[str]
    months: frozenset[str] = frozenset()  # "am 5. Mai": a number before these is an ordinal
    ordinal_cues: frozenset[str] = frozenset()  # "am 5. ...": words before an ordinal number


_P, _N, _E = Abbrev.PREFIX, Abbrev.NUMERIC, Abbrev.END


def _table(prefix: str = "", numeric: str = "", end: str = "") -> dict[str, Abbrev]:
    table = dict.fromkeys(end.split(), _E)
    table.update(dict.fromkeys(numeric.split(), _N))
    table.update(dict.fromkeys(prefix.split(), _P))
    return table


def _pairs(prefix: str = "", end: str = "") -> dict[tuple[str, str], Abbrev]:
    pairs: dict[tuple[str, str], Abbrev] = {}
    for words, kind in ((end, _E), (prefix, _P)):
        for pair in words.split():
            first, second = pair.split("+")
            pairs[first, second] = kind
    return pairs


_Tables = tuple[dict[str, Abbrev], dict[tuple[str, str], Abbrev], str]
_TABLES: Mapping[str, _Tables] = MappingProxyType(
    {
        "en": (
            _table(
                prefix="mr mrs ms mx dr prof st mt messrs vs v e.g i.e cf viz a.k.a approx ca",
                numeric="no nos nr fig figs vol vols p pp ch chap sec art eq ref c tel ext "
                "jan feb mar apr jun jul aug sep sept oct nov dec",
                end="etc inc ltd co corp llc plc jr sr esq al ph.d m.d b.a m.a b.sc u.s u.k "
                "u.s.a e.u u.n a.m p.m rev hon gov sen rep gen capt lt col sgt maj pres dept "
                "ave blvd rd ft",
            ),
            {},
            "the a an this that these those it its it's i i'm i'll i've i'd we we're we'll "
            "you you're you'll he she they they're there there's here then but and so or if "
            "in on at for to from my our your his her their what what's when where why how "
            "who which also now please let let's after before however as with no yes all "
            "each some many most one first next finally once while because since although "
            "though thanks thank sure ok okay great well just note is are was were do does "
            "did can could would should will have has had not see try make today tomorrow "
            "yesterday meanwhile otherwise instead still that's remember keep use check go "
            "here's don't you'll good perfect alright anyway hope enjoy feel happy glad sorry "
            "oh hi hello hey wow cool nice awesome absolutely definitely yeah right looks "
            "sounds",
        ),
        "es": (
            _table(
                prefix="sr sra srta sres sras dr dra dres prof profa lic ing arq ud uds vd vds "
                "dña sto sta av avda aprox ej vs p.ej fdo ntra ntro",
                numeric="pág págs núm art arts cap caps fig vol tel p pp n "
                "ene feb mar abr jun jul ago sept oct nov dic",
                end="etc cía s.a s.l ee.uu a.m p.m a.c d.c admón depto dpto atte",
            ),
            _pairs(prefix="p+ej", end="ee+uu a+m p+m a+c d+c s+a s+l"),
            "el la los las un una unos unas lo esto eso esta este estos estas ese esa aquí "
            "allí yo tú usted ustedes nosotros nosotras él ella ellos ellas mi tu su nuestro "
            "pero y o así luego después entonces también además sin con por para en de del al "
            "si no sí hay es son está están fue era que qué cómo cuándo dónde cuál gracias "
            "bueno vale claro hoy mañana ayer ahora primero finalmente le les me te se nos "
            "muy más ya todo todos cuando como mientras aunque porque vamos voy mira hola bien "
            "perfecto listo recuerda ten puedes tienes quieres necesitas espero oye genial "
            "perdón disculpa cuidado ojalá buenos buenas avísame dime había ah oh vaya venga "
            "estoy estamos tengo tenemos puedo podemos creo parece según",
        ),
        "de": (
            _table(
                prefix="z.b d.h bzw vgl ca evtl ggf inkl zzgl exkl bspw sog hr hrn fr frl dr "
                "prof dipl ing st i.d.r z.t v.a o.g u.u bzgl",
                numeric="nr abs abb s tel bd kap art "
                "jan feb mär apr jun jul aug sep sept okt nov dez",
                end="usw etc u.a o.ä u.ä mio mrd jh jhd str geb gest ff v.chr n.chr e.v",
            ),
            _pairs(prefix="z+b d+h z+t v+a u+u i+d", end="u+a s+o s+u o+ä u+ä v+chr n+chr"),
            "der die das ein eine es er sie wir ich du ihr dann aber und oder so wenn in im am "
            "auf mit für zu nach vor bei dies diese dieser dieses hier da dort auch jetzt "
            "heute morgen danke bitte ja nein nicht man was wie wo warum wann wer außerdem "
            "danach zuerst schließlich damit deshalb trotzdem",
        ),
        "fr": (
            _table(
                prefix="m mm mme mlle dr pr prof me st ste cf env ex av bd p.ex c.-à-d c-à-d",
                numeric="p pp chap art n no tél fig vol janv févr avr juil sept oct nov déc",
                end="etc j.-c cie s.a apr",
            ),
            _pairs(prefix="p+ex"),
            "le la les un une des il elle ils elles on nous vous je j'ai c'est ce cette ces "
            "mais et ou donc alors puis ensuite si en dans pour avec sur au aux du de mon ton "
            "son notre votre leur merci oui non voici voilà aujourd'hui demain quand comment "
            "pourquoi où qui que quel enfin",
        ),
        "it": (
            _table(
                prefix="sig sigg dott prof avv ing arch geom rag on egr gent spett es cfr ca p.es",
                numeric="pag pagg n nn art cap fig vol tel",
                end="ecc s.p.a s.r.l d.c a.c sec",
            ),
            _pairs(prefix="p+es", end="a+c d+c"),
            "il lo la i gli le un una uno questo questa quello quella io tu lui lei noi voi "
            "loro ma e o poi allora quindi se in per con su da di del della è sono c'è grazie "
            "sì no oggi domani anche ora quando come perché dove chi che infine",
        ),
        "pt": (
            _table(
                prefix="sr sra srta dr dra prof profa eng exmo exma av pç sto sta aprox ex "
                "p.ex cf vs",
                numeric="pág págs p pp n núm art cap fig vol tel jan fev mar abr mai jun jul ago "
                "set out nov dez",
                end="etc ltda cia s.a a.c d.c a.m p.m r",
            ),
            _pairs(prefix="p+ex", end="a+c d+c"),
            "o a os as um uma este esta isso isto esse essa eu você ele ela nós eles elas mas "
            "e ou então depois também se em no na nos nas para com por de do da é são está "
            "obrigado obrigada sim não hoje amanhã agora quando como onde quem que",
        ),
        "nl": (
            _table(
                prefix="bijv bv d.w.z dhr mevr mw mr dr prof ir ing drs ca m.b.t t.a.v i.p.v m.a.w",
                numeric="nr blz pag art tel jan feb mrt apr jun jul aug sep sept okt nov dec",
                end="enz etc o.a e.d n.v b.v",
            ),
            {},
            "de het een dit dat deze die ik je jij u hij zij ze wij we jullie maar en of dan "
            "daarna ook als in op met voor naar bij er hier daar nu vandaag morgen dank "
            "bedankt ja nee wat hoe waar waarom wanneer wie",
        ),
        "pl": (
            _table(
                prefix="np tj tzw prof dr mgr inż ul al pl os godz ok m.in zob wg płk gen ks św",
                numeric="nr str s poz art tel ust pkt",
                end="itd itp r tys",
            ),
            {},
            "to ten ta te ja ty on ona ono my wy oni one ale i a lub albo więc potem "
            "następnie też także jeśli jeżeli w na z do dla po od przez jest są był była "
            "dziękuję tak nie dziś dzisiaj jutro teraz co jak gdzie dlaczego kiedy kto",
        ),
    }
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_DE_MONTHS = _words(
    "januar februar märz april mai juni juli august september oktober november dezember "
    "jan feb mär apr jun jul aug sep sept okt nov dez"
)
_DE_ORDINAL_CUES = _words(
    "am im zum vom der die das den dem des ab bis seit beim zur ins jeden jede jeder vor nach"
)


def _build(code: str) -> LanguageRules:
    en_abbrevs, en_pairs, en_starters = _TABLES["en"]
    abbrevs, pairs, starters = _TABLES[code]
    if code != "en":
        abbrevs = {**en_abbrevs, **abbrevs}
        pairs = {**en_pairs, **pairs}
        starters = f"{en_starters} {starters}"
    german = code == "de"
    return LanguageRules(
        abbreviations=MappingProxyType(abbrevs),
        pairs=MappingProxyType(pairs),
        first_parts=frozenset(first for first, _ in pairs),
        starters=_words(starters),
        months=_DE_MONTHS if german else frozenset(),
        ordinal_cues=_DE_ORDINAL_CUES if german else frozenset(),
    )


_RULES: Mapping[str, LanguageRules] = MappingProxyType({code: _build(code) for code in _TABLES})

GENERIC_RULES = LanguageRules(
    abbreviations=MappingProxyType(
        _table(
            prefix="dr prof mr mrs ms st vs e.g i.e cf ca approx",
            numeric="no nr fig vol p pp art tel",
            end="etc inc ltd co jr a.m p.m",
        )
    ),
    pairs=MappingProxyType({}),
    first_parts=frozenset(),
    starters=_RULES["en"].starters,
)


def rules_for(language: str) -> LanguageRules:
    """Tables for a BCP-47 tag or bare code ("es-ES", "pt_BR", "de"); generic if unknown."""
    code = language.strip().lower().replace("_", "-").split("-", 1)[0]
    return _RULES.get(code, GENERIC_RULES)
