"""Synthetic Freesound Audio Tagging 2019 (FSDKaggle2019) data in the raw release format.

Layout written under ``out_dir`` (DATASETS.md section 4)::

    train_curated.csv      header "fname,labels"; labels comma-separated, double-quoted when several:
                           00116cd2.wav,"Marimba_and_xylophone,Glockenspiel"
    train_noisy.csv        same header, labels carry deliberate label noise
    train_curated/{fname}  PCM 16-bit mono WAV at ``sample_rate`` (44.1 kHz by default)
    train_noisy/{fname}
    test/{fname}           a handful of unlabelled test clips
    sample_submission.csv  "fname" plus one column per class (the class list), one zero row per test clip

With ``noisy=0`` ``train_noisy.csv`` is header-only, as a release with no noisy clips would be (ingest
reads it as zero noisy clips). ``out_dir`` must be empty or absent unless ``overwrite`` (which clears it).
``fname`` is 8 lower-case hex digits + ``.wav``, drawn from the seeded generator, unique over all splits;
CSV rows are sorted by fname. There is no separate class-list file: as in the real release, the class
list is the header of ``sample_submission.csv`` (alphabetical order). Up to 80 classes use the real
FSDKaggle2019 names; more are filled with generated, plausible names.

Planted structure: class ``c`` owns one frequency band ``[lo_c, hi_c)`` (see :func:`fsd_class_bands`;
bands are log-spaced between 200 Hz and min(16 kHz, 0.45 sr), disjoint, mapped to classes by a seeded
permutation). A class signature is

- band-limited Gaussian noise filling ``[lo_c, hi_c)``,
- a tone at the band's geometric centre, with 2nd and 3rd harmonics at 0.3 and 0.15 of its amplitude,
- a class-specific amplitude modulation of the tones (rate 1..8 Hz, depth 0.3..0.7).

A clip is the sum of its labels' signatures (the first label listed is the main one at gain 1, the
others at gain 0.3..0.7) plus white background noise (about -40 dB in curated, -25 dB in noisy clips),
faded in/out over 5 ms, peak-normalised to 0.3..0.9 and written as PCM_16. Curated clips: 80 % one label,
then 2, 3 or 4 labels (13 %, 5 %, 2 %); every class is a main label at least once when
``curated >= classes``. Noisy clips: same label counts, but 30 % of them have one listed label replaced by
a wrong class (the audio keeps the true one) and 10 % have an extra spurious label appended. The mean
log-power inside each class band identifies the main label of a clip far above chance.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from featurestore.schemas import fsd as S
from featurestore.store.folders import prepare_out_dir
from featurestore.synth.audio_common import SynthSummary, hex_ids, tree_size

__all__ = ["synth_fsd", "fsd_class_bands", "fsd_class_names", "FSD_CLASSES"]

# fmt: off
FSD_CLASSES: tuple[str, ...] = (
    "Accelerating_and_revving_and_vroom", "Accordion", "Acoustic_guitar", "Applause", "Bark", "Bass_drum",
    "Bass_guitar", "Bathtub_(filling_or_washing)", "Bicycle_bell", "Burping_and_eructation", "Bus", "Buzz",
    "Car_passing_by", "Cheering", "Chewing_and_mastication", "Child_speech_and_kid_speaking",
    "Chink_and_clink", "Chirp_and_tweet", "Church_bell", "Clapping", "Computer_keyboard", "Crackle",
    "Cricket", "Crowd", "Cupboard_open_or_close", "Cutlery_and_silverware", "Dishes_and_pots_and_pans",
    "Drawer_open_or_close", "Drip", "Electric_guitar", "Fart", "Female_singing",
    "Female_speech_and_woman_speaking", "Fill_(with_liquid)", "Finger_snapping", "Frying_(food)", "Gasp",
    "Glockenspiel", "Gong", "Gurgling", "Harmonica", "Hi-hat", "Hiss", "Keys_jangling", "Knock",
    "Male_singing", "Male_speech_and_man_speaking", "Marimba_and_xylophone", "Mechanical_fan", "Meow",
    "Microwave_oven", "Motorcycle", "Printer", "Purr", "Race_car_and_auto_racing", "Raindrop", "Run",
    "Scissors", "Screaming", "Shatter", "Sigh", "Sink_(filling_or_washing)", "Skateboard", "Slam", "Sneeze",
    "Squeak", "Stream", "Strum", "Tap", "Tick-tock", "Toilet_flush", "Traffic_noise_and_roadway_noise",
    "Trickle_and_dribble", "Walk_and_footsteps", "Water_tap_and_faucet", "Waves_and_surf", "Whispering",
    "Writing", "Yell", "Zipper_(clothing)",
)

_EXTRA_NOUNS = (
    "Whistle", "Hum", "Rattle", "Clank", "Thud", "Chime", "Rustle", "Siren", "Engine", "Horn", "Drone",
    "Snare", "Cymbal", "Flute", "Violin", "Trumpet", "Rumble", "Splash", "Crunch", "Beep", "Click", "Ring",
    "Sizzle", "Wind", "Thunder", "Bell", "Buzzer", "Tambourine", "Banjo", "Harp",
)
_EXTRA_SUFFIX = ("", "_(indoor)", "_(outdoor)", "_(mechanical)", "_(distant)", "_(close)")
# fmt: on

_LABEL_COUNT_P = np.array([0.80, 0.13, 0.05, 0.02])
_FADE_S = 0.005
_LO_HZ = 200.0
_HI_HZ = 16000.0


def fsd_class_names(classes: int, seed: int = 0) -> list[str]:
    """The ``classes`` class names used for ``seed``, in alphabetical (sample_submission) order."""
    if classes < 1:
        raise ValueError("classes must be >= 1")
    rng = np.random.default_rng([seed, 0xF5D])
    if classes <= len(FSD_CLASSES):
        pick = rng.choice(len(FSD_CLASSES), size=classes, replace=False)
        return sorted(FSD_CLASSES[i] for i in pick)
    names = list(FSD_CLASSES)
    taken = set(names)
    combos = [
        f"{a}{s}" if k == 0 else f"{a}_and_{b}{s}"
        for k in range(2)
        for a in _EXTRA_NOUNS
        for b in (_EXTRA_NOUNS if k else ("",))
        for s in _EXTRA_SUFFIX
        if a != b
    ]
    for i in rng.permutation(len(combos)):
        if len(names) == classes:
            break
        if combos[i] not in taken:
            taken.add(combos[i])
            names.append(combos[i])
    n = 0
    while len(names) < classes:  # beyond every combination: numbered names
        n += 1
        names.append(f"Sound_{n:04d}")
    return sorted(names)


def fsd_class_bands(classes: int, sample_rate: int = 44100, seed: int = 0) -> np.ndarray:
    """Frequency band ``[lo, hi)`` in Hz owned by each class, shape ``(classes, 2)``.

    Row ``i`` belongs to the ``i``-th name of :func:`fsd_class_names` (alphabetical order). Slots are
    log-spaced between 200 Hz and min(16 kHz, 0.45 * sample_rate); a band fills the middle 60 % of its
    slot (in log frequency), and slots are dealt to classes by a permutation drawn from ``seed``.
    """
    hi = min(_HI_HZ, 0.45 * sample_rate)
    if hi <= _LO_HZ:
        raise ValueError(f"sample_rate {sample_rate} too low")
    edges = np.geomspace(_LO_HZ, hi, classes + 1)
    log_lo, log_hi = np.log(edges[:-1]), np.log(edges[1:])
    width = log_hi - log_lo
    bands = np.exp(np.stack([log_lo + 0.2 * width, log_hi - 0.2 * width], axis=1))
    perm = np.random.default_rng([seed, 0xBA4D]).permutation(classes)
    return bands[perm]


def _draw_labels(rng: np.random.Generator, n: int, classes: int, cover: bool) -> list[list[int]]:
    """Label lists (main label first) for ``n`` clips."""
    if cover and n >= classes:
        main = np.concatenate([rng.permutation(classes), rng.integers(0, classes, size=n - classes)])
        main = main[rng.permutation(n)]
    else:
        main = rng.integers(0, classes, size=n)
    max_labels = min(len(_LABEL_COUNT_P), classes)
    p = _LABEL_COUNT_P[:max_labels] / _LABEL_COUNT_P[:max_labels].sum()
    counts = rng.choice(np.arange(1, max_labels + 1), size=n, p=p)
    out: list[list[int]] = []
    for m, k in zip(main.tolist(), counts.tolist(), strict=True):
        labels = [m]
        if k > 1:
            others = rng.choice(classes - 1, size=k - 1, replace=False)
            labels += [int(o + (o >= m)) for o in others]
        out.append(labels)
    return out


def _corrupt(rng: np.random.Generator, labels: list[list[int]], classes: int) -> list[list[int]]:
    """Listed labels for noisy clips: 30 % get one label swapped for a wrong class, 10 % an extra one."""
    out: list[list[int]] = []
    swap = rng.random(len(labels)) < 0.3
    extra = rng.random(len(labels)) < 0.1
    for lab, s, e in zip(labels, swap.tolist(), extra.tolist(), strict=True):
        lab = list(lab)
        if classes > len(lab):
            if s:
                pos = int(rng.integers(0, len(lab)))
                wrong = [c for c in range(classes) if c not in lab]
                lab[pos] = wrong[int(rng.integers(0, len(wrong)))]
            if e and classes > len(lab):
                wrong = [c for c in range(classes) if c not in lab]
                lab.append(wrong[int(rng.integers(0, len(wrong)))])
        out.append(lab)
    return out


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= ``n`` (a fast FFT size)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 << max(0, (-(-n // p35) - 1).bit_length())  # p35 * smallest power of 2 reaching n
            if n <= m < best:
                best = m
            p35 *= 3
        p5 *= 5
    return best


class _Signatures:
    """Per-class signal parameters and the clip renderer.

    A clip is rendered in the frequency domain with one inverse FFT of a fast length ``m >= n``
    (then cut to ``n`` samples): band noise fills the class band's bins; the tone and its two
    harmonics are amplitude-modulated sinusoids, i.e. a carrier bin plus two sidebands at
    ``+-am_rate`` carrying ``depth / 2`` of its amplitude.
    """

    def __init__(self, rng: np.random.Generator, bands: np.ndarray, sample_rate: int) -> None:
        self.sr = sample_rate
        self.bands = bands
        self.tone = np.sqrt(bands[:, 0] * bands[:, 1])
        self.am_rate = rng.uniform(1.0, 8.0, size=len(bands))
        self.am_depth = rng.uniform(0.3, 0.7, size=len(bands))

    def render(self, rng: np.random.Generator, n: int, labels: list[int], floor_db: float) -> np.ndarray:
        sr = self.sr
        m = _fast_len(n)
        nbins = m // 2 + 1
        hz_per_bin = sr / m
        spec = np.zeros(nbins, dtype=np.complex128)
        gains = np.concatenate([[1.0], rng.uniform(0.3, 0.7, size=len(labels) - 1)])
        for c, g in zip(labels, gains.tolist(), strict=True):
            lo, hi = self.bands[c]
            k0 = min(nbins, int(np.ceil(lo / hz_per_bin)))
            k1 = min(nbins, int(np.ceil(hi / hz_per_bin)))
            nb = k1 - k0
            if nb > 0:  # unit-RMS band noise (before the cut to n samples), weight 0.7
                sigma = 0.7 * g * m / (2.0 * np.sqrt(nb))
                spec[k0:k1] += sigma * (rng.standard_normal(nb) + 1j * rng.standard_normal(nb))
            phase = rng.uniform(0, 2 * np.pi, size=3)
            am_phase = rng.uniform(0, 2 * np.pi)
            side = int(round(self.am_rate[c] / hz_per_bin))
            for h, a in ((1, 1.0), (2, 0.3), (3, 0.15)):
                k = int(round(h * self.tone[c] / hz_per_bin))
                if not 0 < k < nbins - 1:
                    continue
                amp = g * a * m / 2.0  # time-domain amplitude g * a
                carrier = amp * np.exp(1j * (phase[h - 1] - np.pi / 2))
                spec[k] += carrier
                if side > 0:
                    half = 0.5 * self.am_depth[c]
                    if k + side < nbins - 1:
                        spec[k + side] += half * carrier * np.exp(1j * am_phase)
                    if k - side > 0:
                        spec[k - side] += half * carrier * np.exp(-1j * am_phase)
        x = np.fft.irfft(spec, n=m)[:n].astype(np.float32)
        rms = max(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))), 1e-12)
        x += np.float32(rms * 10 ** (floor_db / 20)) * rng.standard_normal(n, dtype=np.float32)
        fade = min(int(_FADE_S * sr), n // 2)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
            x[:fade] *= ramp
            x[n - fade :] *= ramp[::-1]
        peak = max(float(np.abs(x).max()), 1e-12)
        x *= np.float32(rng.uniform(0.3, 0.9) / peak)
        return x


def synth_fsd(
    out_dir: str | Path,
    curated: int = 200,
    noisy: int = 300,
    classes: int = 80,
    seed: int = 0,
    sample_rate: int = S.SAMPLE_RATE,
    min_seconds: float = 0.3,
    max_seconds: float = 4.0,
    test_clips: int = 20,
    overwrite: bool = False,
) -> SynthSummary:
    """Write a synthetic FSDKaggle2019 data set under ``out_dir``; see the module docstring.

    Clip durations are log-uniform in ``[min_seconds, max_seconds]``. Returns a :class:`SynthSummary`
    (clips counts curated + noisy + test clips).
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    if curated < 0 or noisy < 0 or test_clips < 0:
        raise ValueError("clip counts must be >= 0")
    out = prepare_out_dir(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    names = fsd_class_names(classes, seed)
    sig = _Signatures(rng, fsd_class_bands(classes, sample_rate, seed), sample_rate)

    splits = ((S.TRAIN_SPLITS[0][0], curated), (S.TRAIN_SPLITS[1][0], noisy), (S.TEST_DIR, test_clips))
    fnames_all = hex_ids(rng, curated + noisy + test_clips, 8)
    written: list[Path] = []
    pos = 0
    for split, n in splits:
        fnames = sorted(f"{h}.wav" for h in fnames_all[pos : pos + n])
        pos += n
        (out / split).mkdir(parents=True, exist_ok=True)
        true = _draw_labels(rng, n, classes, cover=split == S.TRAIN_SPLITS[0][0])
        listed = _corrupt(rng, true, classes) if split == S.TRAIN_SPLITS[1][0] else true
        lengths = np.exp(rng.uniform(np.log(min_seconds), np.log(max_seconds), size=n))
        lengths = np.maximum(1, np.round(lengths * sample_rate)).astype(np.int64)
        floor_db = -25.0 if split == S.TRAIN_SPLITS[1][0] else -40.0
        for fname, lab, length in zip(fnames, true, lengths.tolist(), strict=True):
            p = out / split / fname
            sf.write(p, sig.render(rng, length, lab, floor_db), sample_rate, subtype="PCM_16", format="WAV")
            written.append(p)
        if split == S.TEST_DIR:
            p = out / S.SUBMISSION
            with open(p, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow([S.FNAME, *names])
                zeros = ["0"] * len(names)
                for fname in fnames:
                    w.writerow([fname, *zeros])
        else:
            p = out / f"{split}.csv"
            with open(p, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh, lineterminator="\n")
                w.writerow(S.LABEL_COLUMNS)
                for fname, lab in zip(fnames, listed, strict=True):
                    w.writerow([fname, S.LABEL_SEPARATOR.join(names[c] for c in lab)])
        written.append(p)

    return SynthSummary(
        files=len(written), clips=curated + noisy + test_clips, classes=classes, bytes=tree_size(written)
    )
