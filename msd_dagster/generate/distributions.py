"""Value distributions, vocabularies and Unicode name pools for synthetic MSD songs.

Everything is embedded here so that generation never reads the real dataset: the package must
work on a machine that has no MSD files. Figures quoted in comments come from the 10,000-track
subset and a thousand real song files (see the project's MSD reference notes).

All randomness goes through a ``numpy.random.Generator`` handed in by the caller, so the same
seed always yields the same values.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np

from msd_dagster.source.layout import validate_partition_key

# ---------------------------------------------------------------------------------------------
# Folder layout and id shapes
# ---------------------------------------------------------------------------------------------

# Tracks per second-level folder in the real subset: data/A/* holds 7,620, data/B/A..I 2,380.
SUBSET_FOLDER_COUNTS: tuple[tuple[str, int], ...] = (
    ("A/A", 319), ("A/B", 283), ("A/C", 309), ("A/D", 302), ("A/E", 270), ("A/F", 277),
    ("A/G", 306), ("A/H", 310), ("A/I", 308), ("A/J", 282), ("A/K", 276), ("A/L", 277),
    ("A/M", 294), ("A/N", 315), ("A/O", 263), ("A/P", 308), ("A/Q", 295), ("A/R", 283),
    ("A/S", 295), ("A/T", 286), ("A/U", 289), ("A/V", 274), ("A/W", 318), ("A/X", 284),
    ("A/Y", 294), ("A/Z", 303), ("B/A", 276), ("B/B", 274), ("B/C", 284), ("B/D", 279),
    ("B/E", 251), ("B/F", 283), ("B/G", 312), ("B/H", 307), ("B/I", 114),
)  # fmt: skip

# 10,000 tracks by 3,888 artists in the subset.
TRACKS_PER_ARTIST = 10_000 / 3_888

# The 6 characters after the 5 random letters of real ids, with their subset frequencies
# (e.g. TRAAABD 128F42 9CF47); the last 5 characters are uppercase hex.
TRACK_ID_INFIX: tuple[tuple[str, int], ...] = (
    ("128F42", 3285), ("128F93", 2033), ("12903C", 1843), ("128F92", 1194), ("128F14", 922),
    ("128E07", 329), ("128EF3", 195), ("12903D", 188), ("128C71", 11),
)  # fmt: skip
SONG_ID_INFIX: tuple[tuple[str, int], ...] = (
    ("12AB01", 3264), ("12A8C1", 2812), ("12A6D4", 1245), ("12A58A", 729), ("12AC46", 309),
    ("12A8AE", 302), ("12A670", 215), ("12AF72", 202), ("12A81C", 160), ("12AAF3", 135),
    ("12A67A", 103), ("12AC3D", 92), ("12AC90", 71), ("12A631", 48), ("12CF5F", 18),
)  # fmt: skip
ARTIST_ID_INFIX: tuple[tuple[str, int], ...] = (
    ("1187B9", 1898), ("1187FB", 1371), ("11F4C8", 124), ("1241B9", 74), ("11F50C", 67),
    ("11C8A4", 45), ("122988", 32), ("1269FC", 26), ("12086C", 26), ("119B86", 24),
    ("11E283", 23), ("124207", 21), ("1269FB", 17), ("125750", 12), ("125094", 12),
)  # fmt: skip

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_HEX_UPPER = "0123456789ABCDEF"
_HEX_LOWER = "0123456789abcdef"


def cumulative(weights: Sequence[float] | np.ndarray) -> list[float]:
    """Normalised cumulative weights for ``choose`` (much cheaper than ``rng.choice(p=...)``)."""
    c = np.cumsum(np.asarray(weights, dtype=float))
    return (c / c[-1]).tolist()


def clip(x: float, lo: float, hi: float) -> float:
    """Scalar clip (``np.clip`` on Python floats costs microseconds each)."""
    return min(max(x, lo), hi)


def choose(rng: np.random.Generator, cum: list[float]) -> int:
    return min(bisect.bisect_right(cum, rng.random()), len(cum) - 1)


def _chars(rng: np.random.Generator, alphabet: str, n: int) -> str:
    return "".join([alphabet[i] for i in rng.integers(0, len(alphabet), n).tolist()])


_CUM_CACHE: dict[int, list[float]] = {}


def _weighted(rng: np.random.Generator, table: tuple[tuple[str, int], ...]) -> str:
    cum = _CUM_CACHE.get(id(table))
    if cum is None:
        cum = _CUM_CACHE[id(table)] = cumulative([w for _, w in table])
    return table[choose(rng, cum)][0]


def parse_folder(folder: str) -> tuple[str, str]:
    """Split a second-level folder key like ``"A/B"`` into its two letters (validated)."""
    first, second = validate_partition_key(folder).split("/")
    return first, second


def make_track_id(rng: np.random.Generator, folder: str) -> str:
    """``TR`` + folder letters + 3 letters + real-looking infix + 5 hex = 18 characters."""
    c3, c4 = parse_folder(folder)
    return (
        "TR" + c3 + c4 + _chars(rng, _UPPER, 3) + _weighted(rng, TRACK_ID_INFIX)
        + _chars(rng, _HEX_UPPER, 5)
    )  # fmt: skip


def make_song_id(rng: np.random.Generator) -> str:
    return (
        "SO" + _chars(rng, _UPPER, 5) + _weighted(rng, SONG_ID_INFIX) + _chars(rng, _HEX_UPPER, 5)
    )


def make_artist_id(rng: np.random.Generator) -> str:
    return (
        "AR" + _chars(rng, _ALNUM, 5) + _weighted(rng, ARTIST_ID_INFIX)
        + _chars(rng, _HEX_UPPER, 5)
    )  # fmt: skip


def make_mbid(rng: np.random.Generator) -> str:
    """A MusicBrainz-style UUID4 in lowercase, like the real ``artist_mbid`` values."""
    h = _chars(rng, _HEX_LOWER, 32)
    variant = "89ab"[int(rng.integers(0, 4))]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"


def make_md5(rng: np.random.Generator) -> str:
    return _chars(rng, _HEX_LOWER, 32)


def unique_ids(make: Callable[[], str], count: int, taken: set[str]) -> list[str]:
    """Draw ``count`` ids with ``make()`` that collide neither with each other nor ``taken``."""
    out: list[str] = []
    while len(out) < count:
        candidate = make()
        if candidate not in taken:
            taken.add(candidate)
            out.append(candidate)
    return out


# ---------------------------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------------------------


def fit_utf8(text: str, size: int) -> bytes:
    """UTF-8 bytes of ``text`` that fit a fixed ``S{size}`` HDF5 field.

    The real files use NULL-terminated fixed strings, so at most ``size - 1`` bytes are kept,
    and a cut never lands inside a multi-byte character (decoding always succeeds).
    """
    data = text.encode("utf-8")
    limit = size - 1
    if len(data) <= limit:
        return data
    cut = limit
    # Step back over continuation bytes (10xxxxxx) to the start of the cut character.
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return data[:cut]


def _vocabulary(name: str) -> tuple[str, ...]:
    """A word list shipped with the package (``vocabulary/<name>.txt``, one entry per line)."""
    text = resources.files(__package__).joinpath("vocabulary", f"{name}.txt").read_text("utf-8")
    return tuple(text.splitlines())


# Echo Nest terms in rough popularity order (rank drives a Zipf weight). The subset's artists
# carry ~25 terms each out of 3,502 distinct ones; non-Latin terms are rare but present.
_BASE_TERMS: tuple[str, ...] = _vocabulary("terms")
# MusicBrainz tags, rough popularity order. Includes the two junk numeric lines the published
# unique_mbtags list really holds, and the Gurmukhi/CJK tags an earlier loader lost.
_BASE_MBTAGS: tuple[str, ...] = _vocabulary("mbtags")

# The long tail: Echo Nest terms are often "<place or decade> <genre>" ("swedish pop",
# "90s rock"). Composing them gives the thousands of distinct terms of the real data
# (3,502 in the subset) from a small embedded list.
_QUALIFIERS = (
    "american", "british", "german", "french", "swedish", "finnish", "japanese", "brazilian",
    "italian", "canadian", "australian", "dutch", "norwegian", "danish", "spanish", "mexican",
    "russian", "polish", "irish", "scottish", "belgian", "greek", "turkish", "korean", "chinese",
    "indian", "argentinian", "icelandic", "00s", "90s", "80s", "70s", "60s", "melodic", "dark",
    "instrumental", "acoustic", "experimental", "underground", "female",
)  # fmt: skip
_GENRES = (
    "rock", "pop", "punk", "metal", "hip hop", "jazz", "folk", "blues", "soul", "country",
    "techno", "house", "trance", "electronic", "indie", "hardcore", "reggae", "ska", "disco",
    "rap", "dance", "ambient", "garage", "psychedelic", "new wave", "progressive rock",
    "death metal", "black metal", "singer-songwriter", "post-punk", "shoegaze", "emo",
    "drum and bass", "dub", "funk", "gospel", "r&b", "synthpop", "power pop", "doom metal",
)  # fmt: skip


def _tail_order(items: list[str]) -> list[str]:
    # A fixed permutation (own constant seed) so the tail is not alphabetical, yet identical
    # in every process and on every run.
    perm = np.random.default_rng(20101219).permutation(len(items))
    return [items[i] for i in perm]


_COMPOSED = _tail_order(
    sorted({f"{q} {g}" for q in _QUALIFIERS for g in _GENRES} - set(_BASE_TERMS))
)
TERMS: tuple[str, ...] = _BASE_TERMS + tuple(_COMPOSED)
# MusicBrainz tags: the embedded list first, then plain genre terms as a tail.
MBTAGS: tuple[str, ...] = _BASE_MBTAGS + tuple(
    _tail_order([t for t in _BASE_TERMS[:250] if t not in set(_BASE_MBTAGS)])
)

# Tags that must round-trip intact (an earlier pipeline silently dropped exactly these).
SPECIAL_MBTAGS: tuple[str, ...] = (
    "ਪੰਜਾਬੀ",
    "ਭੰਗੜਾ",
    "香港歌手",
    _BASE_MBTAGS[-2],
    _BASE_MBTAGS[-1],
)


def zipf_weights(n: int, exponent: float = 0.9) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** exponent
    return w / w.sum()


_TERM_LOGW = np.log(zipf_weights(len(TERMS)))
_MBTAG_LOGW = np.log(zipf_weights(len(MBTAGS), 1.1))


def weighted_sample(rng: np.random.Generator, logw: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` distinct items drawn with probability ∝ exp(logw) (Gumbel top-k)."""
    k = min(k, len(logw))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    keys = logw + rng.gumbel(size=len(logw))
    return np.argsort(-keys, kind="stable")[:k]


# ---------------------------------------------------------------------------------------------
# Names, titles, places
# ---------------------------------------------------------------------------------------------

_LATIN_FIRST = (
    "John", "Mary", "Peter", "Lucy", "Marvin", "Ella", "Frank", "Nina", "Otis", "Etta", "Johnny",
    "Billie", "Chuck", "Patsy", "Carlos", "Ana", "Luis", "Sofia", "Tom", "Sarah", "Mike", "Kate",
    "Dave", "Lisa", "Sam", "Grace", "Jack", "Ruby", "Willie", "Dolly", "Ray", "June", "Bobby",
    "Aaron", "Hank", "Wanda", "Eddie", "Norah", "Matthew", "Jenny", "Adam", "Casey", "Jeff",
)  # fmt: skip
_ACCENTED_FIRST = (
    "José", "André", "Zoë", "Björn", "Søren", "François", "Hélène", "Jürgen", "Małgorzata",
    "Ángel", "Iñaki", "Sérgio", "Łukasz", "Agnès", "Dvořák", "Renée", "Mónica", "Ólafur",
    "Silvério", "Hélio", "Çağla", "Zsófia", "Jiří", "Ærøskøbing",
)  # fmt: skip
_LATIN_LAST = (
    "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davis", "Miller", "Moore", "King", "Wilder",
    "Easter", "Jefferson", "Patton", "Foley", "Rainey", "Hawkins", "Mendes", "Thompson", "Ford",
    "Lynch", "Walker", "Young", "Allen", "Hill", "Green", "Baker", "Carter", "Nelson", "Reed",
    "Cooper", "Ward", "Brooks", "Hughes", "Price", "Bennett", "Wood", "Barnes", "Ross", "Hayes",
)  # fmt: skip
_ACCENTED_LAST = (
    "Pessoa", "Müller", "Núñez", "Gonçalves", "Préjean", "Ziskind", "Bézu", "Ström",
    "Løvland", "Dubček", "Wałęsa", "Ibáñez", "Fernández", "Émond", "Köhler", "Sørensen",
    "Brassens", "Lefèvre", "Guðmundsson", "Özdemir", "Nováková",
)  # fmt: skip
_BAND_ADJ = (
    "Black", "Silver", "Electric", "Velvet", "Broken", "Lonely", "Holy", "Crystal", "Midnight",
    "Wild", "Golden", "Blue", "Red", "Dead", "Happy", "Little", "Big", "Strange", "Sonic",
    "Cosmic", "Planet", "Box", "Casual", "Rated", "Gob", "Fast", "Grand", "Modern",
)  # fmt: skip
_BAND_NOUN = (
    "Keys", "Wolves", "Tops", "Lips", "Stones", "Riders", "Kings", "Angels", "Ghosts",
    "Machines", "Hearts", "Rivers", "Birds", "Pilots", "Sisters", "Brothers", "Horses", "Dreams",
    "Lights", "Tigers", "Project", "Funk", "Meatmen", "Preservers", "Collective", "Orchestra",
)  # fmt: skip

# Per script: (first names, last names, title words, how words are joined).
_SCRIPTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = {
    "cyrillic": (
        ("Алексей", "Мария", "Иван", "Ольга", "Дмитрий", "Анна", "Юрий", "Татьяна", "Земфира"),
        ("Иванов", "Петрова", "Смирнов", "Кузнецова", "Соколов", "Попова", "Лебедев", "Цой"),
        ("Любовь", "Ночь", "Звезда", "Город", "Песня", "Весна", "Дорога", "Солнце", "Мечта"),
        " ",
    ),
    "chinese": (
        ("周", "王", "李", "张", "陈", "刘", "林", "黄", "郑", "邓"),
        ("杰伦", "菲", "丽君", "学友", "德华", "慧敏", "宇", "晓明", "家辉", "心如"),
        ("爱", "夜", "心", "雨", "梦", "城市", "月亮", "朋友", "时间", "香港", "星星", "海"),
        "",
    ),
    "japanese": (
        ("田中", "鈴木", "佐藤", "高橋", "山本", "中島", "坂本"),
        ("はるか", "健太", "ゆい", "ヒカル", "あゆみ", "龍一", "みゆき"),
        ("さくら", "夏", "恋", "青い", "空", "ありがとう", "東京", "夢", "未来", "雨"),
        "",
    ),
    "korean": (
        ("김", "이", "박", "최", "정", "강"),
        ("민준", "서연", "지호", "하은", "도윤", "수아"),
        ("사랑", "밤", "별", "꿈", "눈물", "서울", "바다", "봄"),
        " ",
    ),
    "gurmukhi": (
        ("ਗੁਰਪ੍ਰੀਤ", "ਹਰਜੀਤ", "ਮਨਦੀਪ", "ਸਿਮਰਨ", "ਜਸਬੀਰ", "ਗੁਰਦਾਸ"),
        ("ਸਿੰਘ", "ਕੌਰ", "ਮਾਨ", "ਸੰਧੂ", "ਗਿੱਲ", "ਦੋਸਾਂਝ"),
        ("ਪਿਆਰ", "ਦਿਲ", "ਪੰਜਾਬ", "ਭੰਗੜਾ", "ਗੀਤ", "ਯਾਰ", "ਨੱਚਣਾ", "ਸੋਹਣੀ"),
        " ",
    ),
    "devanagari": (
        ("राहुल", "प्रिया", "अमित", "सुनीता", "किशोर", "लता"),
        ("शर्मा", "वर्मा", "गुप्ता", "सिंह", "कुमार"),
        ("प्यार", "दिल", "रात", "सपना", "गीत", "बारिश"),
        " ",
    ),
    "arabic": (
        ("محمد", "فاطمة", "أحمد", "ليلى", "عمرو"),
        ("حداد", "الخوري", "منصور", "سليمان", "دياب"),
        ("حب", "ليل", "قلب", "حبيبي", "قمر", "بحر"),
        " ",
    ),
    "greek": (
        ("Γιώργος", "Μαρία", "Νίκος", "Ελένη", "Άννα"),
        ("Παπαδόπουλος", "Νικολάου", "Γεωργίου", "Βίσση"),
        ("Αγάπη", "Νύχτα", "Θάλασσα", "Καρδιά", "Όνειρο"),
        " ",
    ),
    "hebrew": (
        ("דוד", "שרה", "יוסי", "מיכל"),
        ("כהן", "לוי", "מזרחי", "חזה"),
        ("אהבה", "לילה", "ים", "חלום"),
        " ",
    ),
    "thai": (
        ("สมชาย", "สุดา", "ปรีชา"),
        ("ใจดี", "ศรีสุข", "ทองดี"),
        ("รัก", "คืน", "ฝัน", "ทะเล"),
        " ",
    ),
}

# Share of artists by script: mostly plain Latin, as in the MSD.
_SCRIPT_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("latin", 0.80), ("accented", 0.08), ("cyrillic", 0.025), ("chinese", 0.025),
    ("japanese", 0.015), ("korean", 0.01), ("gurmukhi", 0.01), ("devanagari", 0.01),
    ("arabic", 0.008), ("greek", 0.008), ("hebrew", 0.005), ("thai", 0.004),
)  # fmt: skip

_LATIN_WORDS = (
    "Love", "Night", "Heart", "Rain", "Fire", "Dream", "Blues", "Road", "Home", "Girl", "Boy",
    "Time", "Soul", "Light", "Sun", "Moon", "River", "City", "Dance", "Song", "Baby", "World",
    "Money", "Train", "Summer", "Angel", "Devil", "Ghost", "Paradise", "Memory", "Shadow",
    "Highway", "Morning", "Midnight", "Tears", "Kiss", "Wind", "Star", "Ocean", "Gold", "Stride",
    "Deep", "Pink", "Real", "Young", "Lonesome", "Wartime", "Bottom", "Paper", "Street", "Car",
)  # fmt: skip
_ACCENTED_WORDS = (
    "Corazón", "Canción", "Amor", "Saudade", "Coração", "Été", "Fiancée", "Mañana", "Niño",
    "Café", "Fenêtre", "Über", "Straße", "Mädchen", "Łzy", "Çiçek", "Señorita", "Pájaro",
    "Ilusão", "Déjà vu", "Cabaret", "Número", "Mère",
)  # fmt: skip
_TITLE_SUFFIXES = (
    " (Album Version)", " (Live)", " (Remastered)", " (Remix)", " (Instrumental Version)",
    " (Radio Edit)", " (Skit)", " (Demo)", " - Live",
)  # fmt: skip
_RELEASE_SUFFIXES = (" (Deluxe Edition)", " Vol. 2", ": Greatest Hits", " (Remastered)", " EP")


_SCRIPT_CUM = cumulative([w for _, w in _SCRIPT_WEIGHTS])


def pick_script(rng: np.random.Generator) -> str:
    return _SCRIPT_WEIGHTS[choose(rng, _SCRIPT_CUM)][0]


def _pick(rng: np.random.Generator, pool: tuple[str, ...]) -> str:
    return pool[int(rng.integers(0, len(pool)))]


def artist_name(rng: np.random.Generator, script: str) -> str:
    if script in _SCRIPTS:
        first, last, words, sep = _SCRIPTS[script]
        if rng.random() < 0.7:
            return _pick(rng, first) + sep + _pick(rng, last)
        return _pick(rng, words) + sep + _pick(rng, words)
    accented = script == "accented"
    first = _ACCENTED_FIRST if accented else _LATIN_FIRST
    last = _ACCENTED_LAST if accented else _LATIN_LAST
    r = rng.random()
    if r < 0.45:
        return f"{_pick(rng, first)} {_pick(rng, last)}"
    if r < 0.75:
        return f"The {_pick(rng, _BAND_ADJ)} {_pick(rng, _BAND_NOUN)}"
    if r < 0.85:
        return f"{_pick(rng, _BAND_ADJ)}{_pick(rng, _BAND_NOUN).lower()}"
    if r < 0.92:
        return f"{_pick(rng, first)} & The {_pick(rng, _BAND_NOUN)}"
    return f"DJ {_pick(rng, last)}"


def title_text(rng: np.random.Generator, script: str, *, release: bool = False) -> str:
    """A track title or release name in ``script`` (20% of non-Latin artists' titles are Latin)."""
    if script in _SCRIPTS and rng.random() < 0.8:
        _, _, words, sep = _SCRIPTS[script]
        text = sep.join(_pick(rng, words) for _ in range(int(rng.integers(1, 4))))
    else:
        pool = _ACCENTED_WORDS if script == "accented" and rng.random() < 0.6 else _LATIN_WORDS
        n = int(rng.integers(1, 4))
        text = " ".join(_pick(rng, pool) for _ in range(n))
        if n == 2 and rng.random() < 0.3:
            text = text.replace(" ", " of the ", 1)
    if rng.random() < 0.004:
        # A 4-byte UTF-8 character (U+1D11E) now and then: MySQL's 3-byte utf8 would choke.
        text = "\U0001d11e " + text
    suffixes = _RELEASE_SUFFIXES if release else _TITLE_SUFFIXES
    if rng.random() < 0.12:
        text += _pick(rng, suffixes)
    return text


def long_title(rng: np.random.Generator) -> str:
    """A classical-style title longer than 200 characters (rare in the real data)."""
    movements = (
        "Allegro ma non troppo, un poco maestoso", "Molto vivace", "Adagio molto e cantabile",
        "Presto – Allegro assai", "Andante con moto", "Scherzo: Allegro", "Finale: Presto",
    )  # fmt: skip
    parts = [f"Symphony No. {int(rng.integers(1, 10))} in D minor, Op. {int(rng.integers(1, 130))}"]
    i = 1
    while sum(len(p) + 3 for p in parts) <= 230:
        parts.append(f"{'I' * min(i, 3)}. {_pick(rng, movements)}")
        i += 1
    return " - ".join(parts)


def long_artist_name(rng: np.random.Generator) -> str:
    """A compilation-style credit (many names joined) longer than 200 characters."""
    names: list[str] = []
    while sum(len(n) + 3 for n in names) <= 220:
        script = pick_script(rng) if rng.random() < 0.5 else "accented"
        names.append(artist_name(rng, script))
    return " / ".join(names)


# (location text, latitude, longitude). The text also appears for artists without coordinates.
LOCATIONS: tuple[tuple[str, float, float], ...] = (
    ("Memphis, TN", 35.14968, -90.04892), ("London, England", 51.50632, -0.12714),
    ("New York, NY", 40.71455, -74.00712), ("Los Angeles, CA", 34.05349, -118.24532),
    ("Chicago, IL", 41.88415, -87.63241), ("Paris, France", 48.85692, 2.34121),
    ("Berlin, Germany", 52.51607, 13.37698), ("Kingston, Jamaica", 17.99702, -76.79358),
    ("Toronto, Ontario, Canada", 43.64856, -79.38533), ("Stockholm, Sweden", 59.33217, 18.06243),
    ("São Paulo, Brasil", -23.56287, -46.65497), ("México D.F.", 19.43261, -99.13321),
    ("Москва", 55.75697, 37.61502), ("Hong Kong", 22.28552, 114.15769),
    ("東京", 35.68953, 139.69171), ("Seoul, South Korea", 37.5665, 126.978),
    ("ਲੁਧਿਆਣਾ, ਪੰਜਾਬ", 30.90096, 75.85729), ("Reykjavík, Iceland", 64.13548, -21.89541),
    ("Αθήνα", 37.97614, 23.7364), ("Tel Aviv, Israel", 32.0804, 34.78057),
    ("Bangkok, Thailand", 13.75398, 100.50144), ("Cairo, Egypt", 30.04444, 31.23573),
    ("Mumbai, India", 19.07602, 72.87764), ("Sydney, Australia", -33.86963, 151.20695),
    ("Kraków, Poland", 50.06045, 19.93242), ("Montréal, Québec, Canada", 45.51228, -73.55439),
    ("Düsseldorf, Germany", 51.22172, 6.77616), ("Nashville, TN", 36.16778, -86.77836),
    ("Seattle, WA", 47.60356, -122.32944), ("Atlanta, GA", 33.74831, -84.39111),
    ("Detroit, MI", 42.33168, -83.04792), ("New Orleans, LA", 29.95369, -90.07771),
    ("Austin, TX", 30.26759, -97.74299), ("Manchester, England", 53.47959, -2.24881),
    ("Dublin, Ireland", 53.34376, -6.24953), ("Glasgow, Scotland", 55.85773, -4.24251),
    ("New York, NY [Manhattan]", 40.79086, -73.96644), ("North Carolina", 35.21962, -80.01955),
    ("Lansing, MI", 42.73383, -84.59334), ("Boulder, CO", 40.01574, -105.27924),
)  # fmt: skip
# Free-text locations that real files carry without coordinates.
VAGUE_LOCATIONS: tuple[str, ...] = (
    "California - LA", "Ohio", "UK", "Texas", "Germany", "Brooklyn", "Europe", "ਪੰਜਾਬ",
    "Québec", "Burlington, Ontario, Canada", "Bay Area", "Jamaica", "España", "Россия",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Per-artist and per-track scalar draws
# ---------------------------------------------------------------------------------------------

# Rates measured over real files.
YEAR_ZERO_RATE = 0.22
SONG_HOTTTNESSS_NAN_RATE = 0.48
LOCATION_NAN_RATE = 0.63
MBTAGS_EMPTY_RATE = 0.37
MBID_EMPTY_RATE = 399 / 3888
EMPTY_RHYTHM_RATE = 0.005  # tracks with no bars, beats, sections (and tatums)


@dataclass(frozen=True)
class SongScalars:
    """Song-level analysis values drawn up front (the arrays follow from them)."""

    duration: float
    end_of_fade_in: float
    start_of_fade_out: float
    tempo: float
    time_signature: int
    time_signature_confidence: float
    key: int
    key_confidence: float
    mode: int
    mode_confidence: float
    loudness: float
    tatums_per_beat: int
    empty_rhythm: bool


# Key frequencies roughly as in the MSD (C, G, D, A most common).
_KEY_CUM = cumulative([12, 9, 10, 3, 7, 9, 6, 13, 6, 10, 7, 8])
_TS_VALUES, _TS_CUM = (1, 3, 4, 5, 7), cumulative([0.12, 0.13, 0.67, 0.06, 0.02])
_TATUMS_CUM = cumulative([0.05, 0.79, 0.08, 0.08])  # 1, 2, 3, 4 tatums per beat


def song_scalars(rng: np.random.Generator, *, empty_rhythm: bool) -> SongScalars:
    # Lognormal duration: median ~215 s, mean ~233 s (which gives the real ~481 beats per
    # track at the mean tempo), long tail up to half an hour.
    duration = clip(float(rng.lognormal(math.log(215.0), 0.4)), 12.0, 1800.0)
    duration = round(duration, 5)
    fade_in = (
        0.0 if rng.random() < 0.35 else float(rng.exponential(0.6 if rng.random() < 0.9 else 4))
    )
    fade_in = round(min(fade_in, duration * 0.1), 3)
    gap = 0.0 if rng.random() < 0.15 else float(rng.exponential(9.0))
    fade_out = round(max(fade_in, duration - gap), 3)
    ts = _TS_VALUES[choose(rng, _TS_CUM)]
    ts_conf = 0.0 if (ts == 1 and rng.random() < 0.8) else round(float(rng.beta(2, 2)), 3)
    tempo = 0.0 if empty_rhythm else round(clip(float(rng.normal(124, 28)), 40.0, 250.0), 3)
    key_conf = 0.0 if rng.random() < 0.08 else round(float(rng.beta(1.2, 1.5)), 3)
    return SongScalars(
        duration=duration,
        end_of_fade_in=fade_in,
        start_of_fade_out=fade_out,
        tempo=tempo,
        time_signature=ts,
        time_signature_confidence=ts_conf,
        key=choose(rng, _KEY_CUM),
        key_confidence=key_conf,
        mode=int(rng.random() < 0.69),
        mode_confidence=round(float(rng.beta(2, 2.2)), 3),
        loudness=round(clip(-float(rng.gamma(3.0, 3.4)) - 0.3, -58.0, 0.0), 3),
        tatums_per_beat=1 + choose(rng, _TATUMS_CUM),
        empty_rhythm=empty_rhythm,
    )


def year_value(rng: np.random.Generator) -> int:
    if rng.random() < YEAR_ZERO_RATE:
        return 0
    # Skewed towards the 2000s like the MSD (median ~2002), back to the 1920s.
    return int(clip(2011 - round(float(rng.gamma(1.4, 9.0))), 1922, 2010))


def song_hotttnesss(rng: np.random.Generator) -> float:
    if rng.random() < SONG_HOTTTNESSS_NAN_RATE:
        return math.nan
    if rng.random() < 0.15:
        return 0.0
    return float(rng.beta(4, 5))


# Timbre column statistics from real segments (first column is a loudness-like value).
_TIMBRE_MEAN = np.array([43.2, 13.7, 16.6, 8.7, -8.9, -4.7, 2.6, -0.9, 2.2, 4.0, -1.9, -0.9])
_TIMBRE_STD = np.array([7.0, 59.5, 53.0, 49.7, 39.3, 34.5, 27.9, 25.2, 21.8, 19.9, 20.4, 18.3])


def _starts_on_grid(
    rng: np.random.Generator, first: float, period: float, end: float, jitter: float
) -> np.ndarray:
    n = max(0, int((end - first) / period))
    if n == 0:
        return np.empty(0)
    steps = period * (1.0 + rng.normal(0.0, jitter, n - 1))
    return first + np.concatenate(([0.0], np.cumsum(steps)))


def analysis_arrays(rng: np.random.Generator, s: SongScalars) -> dict[str, np.ndarray]:
    """Beat-synchronous arrays consistent with duration, tempo and time signature.

    Keys are dataset names inside ``analysis/`` (e.g. ``"bars_start"``).
    """
    d = s.duration
    out: dict[str, np.ndarray] = {}
    empty = np.empty(0, dtype=np.float64)

    if s.empty_rhythm:
        for kind in ("bars", "beats", "tatums", "sections"):
            out[f"{kind}_start"] = empty
            out[f"{kind}_confidence"] = empty
    else:
        period = 60.0 / s.tempo
        first = float(rng.uniform(0.05, min(2.0, 1.5 * period))) + s.end_of_fade_in * 0.5
        end = d - float(rng.uniform(0.0, 2.5))
        beats = _starts_on_grid(rng, first, period, end, 0.01)
        beats_conf = rng.beta(1.6, 1.4, len(beats))
        # Bars every time_signature beats from a random downbeat; with 1/4 bars == beats,
        # confidences included, exactly as the real files have it.
        if s.time_signature == 1:
            bars, bars_conf = beats, beats_conf
        else:
            down = int(rng.integers(0, s.time_signature))
            bars = beats[down :: s.time_signature]
            bars_conf = rng.beta(0.8, 3.5, len(bars))
        # Tatums subdivide each beat (f per beat, so f * n_beats of them, as in real files);
        # a virtual beat before the first lets them start earlier.
        if len(beats):
            f = s.tatums_per_beat
            grid = np.concatenate(([beats[0] - period], beats))
            tat = (grid[:-1, None] + np.diff(grid)[:, None] * (np.arange(f) / f)).ravel()
            tat = tat[1:]  # keep the f-1 tatums just before the first beat
            tat = np.concatenate((tat[tat >= 0.0], beats[-1:]))
        else:
            tat = empty
        tat_conf = rng.beta(1.2, 1.8, len(tat))
        # Sections: ~23 s long on average, first at 0 with confidence 1, snapped to bars.
        n_sec = max(1, int(round(d / clip(float(rng.normal(23.0, 5.0)), 12.0, 45.0))))
        inner = np.sort(rng.uniform(0.02 * d, 0.97 * d, n_sec - 1))
        if len(bars) and len(inner):
            inner = bars[np.clip(np.searchsorted(bars, inner), 0, len(bars) - 1)]
        sections = np.unique(np.concatenate(([0.0], inner)))
        sec_conf = rng.beta(1.2, 1.5, len(sections))
        sec_conf[0] = 1.0
        for name, start, conf in (
            ("bars", bars, bars_conf),
            ("beats", beats, beats_conf),
            ("tatums", tat, tat_conf),
            ("sections", sections, sec_conf),
        ):
            out[f"{name}_start"] = np.round(start, 5)
            out[f"{name}_confidence"] = np.round(conf, 3)

    # Segments: ~0.33 s each (real tracks: 480-1,400 per track), gamma-distributed lengths.
    seg_mean = clip(float(rng.normal(0.33, 0.05)), 0.18, 0.6)
    n_seg = max(2, int(round(d / seg_mean)))
    lengths = rng.gamma(2.5, 1.0, n_seg)
    span = d - float(rng.uniform(0.0, min(3.0, 0.02 * d)))
    lengths *= span / lengths.sum()
    seg_start = np.concatenate(([0.0], np.cumsum(lengths)[:-1]))
    seg_conf = rng.beta(1.5, 0.9, n_seg)
    seg_conf[rng.random(n_seg) < 0.08] = 1.0
    seg_conf[0] = 0.0 if rng.random() < 0.8 else 1.0
    l_start = np.clip(rng.normal(s.loudness - 11.0, 6.0, n_seg), -60.0, 0.0)
    l_start[0] = -60.0
    l_max = np.minimum(l_start + rng.gamma(2.0, 4.5, n_seg), 0.0)
    l_max_time = np.minimum(rng.exponential(0.058, n_seg), lengths)
    pitches = rng.beta(0.7, 1.3, (n_seg, 12))
    pitches /= pitches.max(axis=1, keepdims=True)  # each chroma vector peaks at exactly 1
    timbre = rng.normal(
        _TIMBRE_MEAN + rng.normal(0, 0.3, 12) * _TIMBRE_STD, _TIMBRE_STD, (n_seg, 12)
    )
    timbre[:, 0] = np.clip(timbre[:, 0] + (s.loudness + 10.0) * 0.8, 0.0, 60.0)
    out["segments_start"] = np.round(seg_start, 5)
    out["segments_confidence"] = np.round(seg_conf, 3)
    out["segments_loudness_max"] = np.round(l_max, 3)
    out["segments_loudness_max_time"] = np.round(l_max_time, 5)
    out["segments_loudness_start"] = np.round(l_start, 3)
    out["segments_pitches"] = np.round(pitches, 3)
    out["segments_timbre"] = np.round(timbre, 3)
    return out
