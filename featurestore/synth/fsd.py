"""Synthetic Freesound Audio Tagging 2019 (FSDKaggle2019) data in the raw release format.

Layout written under ``out_dir`` (DATASETS.md section 4)::

    train_curated.csv      header "fname,labels"; labels comma-separated, double-quoted when several:
                           00116cd2.wav,"Marimba_and_xylophone,Glockenspiel"
    train_noisy.csv        same header, labels carry deliberate label noise
    train_curated/{fname}  PCM 16-bit mono WAV at ``sample_rate`` (44.1 kHz by default)
    train_noisy/{fname}
    test/{fname}           a handful of unlabelled test clips
    sample_submission.csv  "fname" plus one column per class (the class list), one zero row per test clip
    _planted/planted.npz   NOT part of the release: the generator's truth (:data:`PLANTED`, read by
                           :func:`read_planted`): every clip's true labels, and each class's event

With ``noisy=0`` ``train_noisy.csv`` is header-only, as a release with no noisy clips would be (ingest
reads it as zero noisy clips). ``out_dir`` must be empty or absent unless ``overwrite`` (which clears it).
``fname`` is 8 lower-case hex digits + ``.wav``, drawn from the seeded generator, unique over all splits;
CSV rows are sorted by fname. There is no separate class-list file: as in the real release, the class
list is the header of ``sample_submission.csv`` (alphabetical order). Up to 80 classes use the real
FSDKaggle2019 names; more are filled with generated, plausible names.

Planted structure (:class:`ClassEvents`). Classes come in **groups of four** that share a frequency
region (a centre between 500 Hz and min(10 kHz, 0.4 sr), one octave wide) and one event kind; the four
members differ only in the **temporal order** of the same material. An event is two halves, each of
which goes one of two ways (member ``m``: first half ``m >> 1``, second ``m & 1``), so the members
are UU, UD, DU, DD:

- ``chirp``: a tone (+ 2nd harmonic) sweeping the octave up or down in each half;
- ``stack``: a harmonic stack (6 harmonics, amplitude 1/h) at a **random pitch** (+-half an octave),
  gliding a third of an octave up or down in each half;
- ``envelope``: band noise whose level decays or swells by 30 dB in each half (onsets vs. swells);
- ``rhythm``: four noise pulses whose inter-onset gaps are one of four orders of (1, 2, 3) units.

Every frame of a member is a frame of its group's other members in another order, so **any statistic
of the multiset of frames** (mean and std pooled over time, histograms) is the same in distribution for
the four members: pooled log-mel tells a clip's group (region and kind) but not which of its four
classes it holds, while a CNN on log-mel crops sees the slope, the order of the halves, the onset and
the rhythm. Difficulty knobs (constants below) and what was measured of them (2026-12-04, on this
2-core host at load 22-33; default sizes; figures beside their baselines in the README section
"FSDKaggle2019 audio tagging end to end"):

- ``_GROUP`` (4 classes per group) with ``_HALF_GAP_S`` (50 ms of silence between an event's halves,
  longer than the 40 ms analysis window): measured on single events (0.4 s at 2 kHz, -40 dB white
  floor, log-mel per-bin mean + std, mean absolute difference in dB), members of a group differ by
  0.47 / 0.54 / 0.72 / 0.69 dB (chirp / stack / envelope / rhythm) where two draws of the same member
  differ by 0.33 / 0.28 / 0.46 / 1.06 dB and a region 1.5 octaves away by 9.2 / 11.8 / 10.3 / 8.1 dB.
  Without the gap (halves joined), members differed by 1.4 / 1.1 / 3.3 / 1.8 dB: the window smooths a
  junction differently by its shape, which pooled statistics could read;
- events at random times (``_EVENT_EVERY_S``): each label has 1 + Poisson(seconds / 2) events of its
  group's duration (0.25-0.5 s, +-15 % per event, ``_EVENT_JITTER``) anywhere in the clip, cut by the
  clip's end; a random crop can miss them all (the crop's label is then wrong, as with real weak labels).
  Denser events were measured and rejected (issue 23, 2026-12-04, load 2.5-3.8, default sizes, seed 0,
  2.5-minute ``train_fsd`` runs with one torch thread and ``epochs=80``): one event per 2 s gave the CNN
  0.370 lwlrap and the logistic regression 0.282 (+0.088); one per 0.75 s gave the CNN 0.396 and the
  logistic regression 0.344 (+0.052; the 5-minute CLI run, early-stopped at 33 epochs by patience 10: 0.398
  against 0.344, ceiling 0.853). Denser events make the labelled group dominate the pooled spectrum over the
  textures, which helps the baseline more than the CNN gains from crops that hit an event more often: the
  margin is in the order, not the density;
- background (``_TEXTURES``, ``_TEXTURE_DB``): 1-3 stationary band-noise textures of other groups'
  regions at -16..-4 dB relative to the events, so band energy alone does not say which region is labelled;
- channel (``_TILT_DB``, ``_BUMP_DB``, ``_LOWPASS_P``): per clip a spectral tilt (+-3 dB per octave),
  one broad resonance or notch (+-6 dB), and for 40 % of clips a low-pass at 3-10 kHz; then a white
  floor (``_FLOOR_DB``: -35 dB curated, -20 dB noisy) and a peak level in 0.05..0.9 (per-clip gain);
- multiple labels: 80 % of clips one label, then 2, 3 or 4 (13 %, 5 %, 2 %); the first is the main
  one at gain 1, the others at 0.3..0.7;
- label noise in ``train_noisy`` only: 30 % of noisy clips have one listed label replaced by a wrong
  class (the audio keeps the true one), 10 % an extra spurious label; ``_planted`` keeps the truth.

Size is a knob too: the CNN is data-limited where the pooled baseline is not. With every knob above,
``fstore train fsd --max-minutes 5`` then ``evaluate fsd --raw-dir`` (seed 0, one run each, load 1-3):

| release | held-out curated clips | CNN | logistic regression | margin | template detector (ceiling) |
|---|---|---|---|---|---|
| 200 curated + 300 noisy (the default before) | 67 | 0.338 | 0.282 | +0.056 | 0.904 |
| **400 curated + 600 noisy (the default)** | 84 | **0.531** | 0.312 | **+0.219** | 0.871 |

Twice the clips lift the CNN by 0.19 and the baseline by 0.03 (about 11 clips a class instead of 5,
where the CNN overfitted 433 training clips from epoch 20 on); the real release has 62 curated clips a
class. Apart from ``_EVENT_EVERY_S`` and the size, the per-knob effects on model, baseline and ceiling
were not measured one by one (see the README).

Every draw comes from one ``numpy.random.default_rng(seed)``; a fixed seed gives byte-identical files.
Clips are rendered and written one at a time (memory is one clip's, whatever the count; the real
size, 4,970 curated + 19,815 noisy clips, writes only clip-sized arrays and the truth file).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from featurestore.schemas import fsd as S
from featurestore.store.atomic import atomic_write_bytes
from featurestore.store.errors import FstoreError
from featurestore.store.folders import prepare_out_dir
from featurestore.synth.audio_common import SynthSummary, hex_ids, tree_size
from featurestore.synth.planted import planted_file, read_npz

__all__ = ["FSD_CLASSES", "KINDS", "PLANTED", "ClassEvents", "Planted", "fsd_class_events", "fsd_class_names",
           "read_planted", "render_event", "synth_fsd"]

PLANTED = "_planted/planted.npz"

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
_LO_HZ, _HI_HZ = 500.0, 10000.0  # group centres (log-spaced)
_GROUP = 4  # classes per group: the four temporal orders of one event kind in one region
KINDS = ("chirp", "stack", "envelope", "rhythm")
_EVENT_S = (0.25, 0.5)  # a group's event duration is drawn in this range
_EVENT_JITTER = 0.15  # each event's duration: the group's x U(1 -+ this)
_EVENT_EVERY_S = 2.0  # events per label: 1 + Poisson(clip seconds / this)
_SECONDARY_GAIN = (0.3, 0.7)
_TEXTURES = (1, 3)  # background textures a clip: uniform in this range (inclusive)
_TEXTURE_DB = (-16.0, -4.0)  # a texture's RMS relative to the events' RMS
_TILT_DB = 3.0  # channel tilt, dB per octave around 1 kHz: U(-this, this)
_BUMP_DB = 6.0  # one broad resonance or notch: U(-this, this) dB at a log-uniform 300 Hz..8 kHz
_LOWPASS_P = 0.4  # share of clips through a low-pass (cut-off 3..10 kHz, 24 dB per octave)
_FLOOR_DB = {"curated": -35.0, "noisy": -20.0}  # white floor relative to the clip's RMS
_PEAK = (0.05, 0.9)  # peak level of the written clip (per-clip gain)
_GAPS = ((1, 2, 3), (3, 2, 1), (2, 1, 3), (3, 1, 2))  # rhythm members: inter-onset gaps, in units
_PULSE_S = 0.03
_HALF_GAP_S = 0.05  # silence between an event's halves: longer than the 40 ms analysis window

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


@dataclass(frozen=True)
class ClassEvents:
    """Each class's planted event, arrays of length ``classes`` in class-name (alphabetical) order.

    group: the class's group (classes of a group share ``centre_hz``, ``kind`` and ``seconds``);
    member: 0..3, the temporal order (first half ``member >> 1``, second ``member & 1``: 1 = up / swell);
    kind: index into :data:`KINDS`; centre_hz: the region's centre; seconds: the group's event duration.
    """

    group: np.ndarray
    member: np.ndarray
    kind: np.ndarray
    centre_hz: np.ndarray
    seconds: np.ndarray


def fsd_class_events(classes: int, sample_rate: int = S.SAMPLE_RATE, seed: int = 0) -> ClassEvents:
    """The planted event of each class for ``seed`` (row ``i``: the ``i``-th name of :func:`fsd_class_names`).

    Classes are dealt to groups of :data:`_GROUP` by a seeded permutation (so alphabetical neighbours are
    not group mates); group centres are log-spaced between 500 Hz and min(10 kHz, 0.4 sample_rate)."""
    hi = min(_HI_HZ, 0.4 * sample_rate)
    if hi <= _LO_HZ:
        raise ValueError(f"sample_rate {sample_rate} too low")
    rng = np.random.default_rng([seed, 0xE7E])
    groups = -(-classes // _GROUP)
    slot = rng.permutation(classes)
    group, member = slot // _GROUP, slot % _GROUP
    centre = np.geomspace(_LO_HZ, hi, groups)[rng.permutation(groups)]
    kind = (np.arange(groups) + rng.integers(len(KINDS))) % len(KINDS)
    seconds = rng.uniform(*_EVENT_S, size=groups)
    return ClassEvents(group, member, kind[group], centre[group], seconds[group])


def _band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    """Unit-RMS Gaussian noise of ``n`` samples band-limited to ``[lo, hi)`` Hz (one FFT)."""
    m = _fast_len(n)
    k = np.fft.rfftfreq(m, 1 / sr)
    spec = np.where((k >= lo) & (k < hi), rng.standard_normal(k.size) + 1j * rng.standard_normal(k.size), 0)
    x = np.fft.irfft(spec, n=m)[:n]
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def _halves(n: int, member: int, a: float, b: float, gap: int, fade: int) -> tuple[np.ndarray, np.ndarray]:
    """(trajectory, amplitude) over ``n`` samples: two equal halves split by ``gap`` silent samples, each
    a line from ``a`` to ``b`` (its bit of ``member`` 1) or from ``b`` to ``a``, faded in and out over
    ``fade`` samples. The silence makes each half a sound of its own, so that the frames of a group's
    four members are the same multiset in another order (no junction whose shape depends on the order)."""
    half = max(1, (n - gap) // 2)
    traj, amp = np.full(n, float(a)), np.zeros(n)
    f = max(0, min(fade, half // 2))
    ramp = np.linspace(0.0, 1.0, f) if f else np.zeros(0)
    for part, s in enumerate((0, min(n, half + gap))):
        e = min(n, s + half)
        if e <= s:
            continue
        up = (member >> (1 - part)) & 1
        traj[s:e] = np.linspace(a, b, half)[: e - s] if up else np.linspace(b, a, half)[: e - s]
        amp[s:e] = 1.0
        k = min(f, e - s)
        amp[s : s + k] *= ramp[:k]
        amp[e - k : e] *= ramp[::-1][f - k :] if k else 1.0
    return traj, amp


def render_event(kind: int, member: int, centre_hz: float, n: int, sample_rate: int,
                 rng: np.random.Generator, pitch_octaves: float | None = None) -> np.ndarray:
    """One event of ``n`` samples (unit RMS, 5 ms fades): ``KINDS[kind]`` in temporal order ``member``
    around ``centre_hz``; the random parts (phases, noise, a stack's pitch) come from ``rng``, except a
    stack's pitch offset when ``pitch_octaves`` is given (0: the region's own pitch)."""
    sr, nyq = sample_rate, 0.45 * sample_rate
    if n < 4:
        return np.zeros(n)
    name = KINDS[kind]
    gap, fade = min(int(_HALF_GAP_S * sr), n // 3), int(_FADE_S * sr)
    if name in ("chirp", "stack"):
        if name == "chirp":
            f0, span, partials = centre_hz, 0.5, ((1, 1.0), (2, 0.35))
        else:
            shift = rng.uniform(-0.5, 0.5) if pitch_octaves is None else pitch_octaves
            f0, span = centre_hz / 2 * 2**shift, 1 / 6
            partials = tuple((h, 1.0 / h) for h in range(1, 7))
        traj, amp = _halves(n, member, -span, span, gap, fade)
        f = f0 * 2**traj
        phase = 2 * np.pi * np.cumsum(f) / sr + rng.uniform(0, 2 * np.pi)
        x = amp * sum(a * np.sin(h * phase) * (h * f < nyq) for h, a in partials)
    elif name == "envelope":
        level_db, amp = _halves(n, member, -30.0, 0.0, gap, fade)
        x = _band_noise(rng, n, centre_hz / np.sqrt(2), min(centre_hz * np.sqrt(2), nyq), sr) * amp * 10 ** (level_db / 20)
    else:  # rhythm: four pulses, inter-onset gaps in the member's order
        gaps = np.array(_GAPS[member])
        pulse = max(2, min(n // 4, int(_PULSE_S * sr)))
        unit = (n - pulse) / gaps.sum()
        x = np.zeros(n)
        decay = np.exp(-np.arange(pulse) / (0.3 * pulse)) * np.minimum(1.0, np.arange(pulse) / max(1, fade))
        lo, hi = centre_hz * 2 ** (-1 / 3), min(centre_hz * 2 ** (1 / 3), nyq)
        for onset in np.concatenate([[0], np.cumsum(gaps)]) * unit:
            s = int(round(onset))
            x[s : s + pulse] += (_band_noise(rng, pulse, lo, hi, sr) * decay)[: n - s]
    x = np.asarray(x, dtype=np.float64)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


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


def _channel_db(rng: np.random.Generator, freqs: np.ndarray) -> np.ndarray:
    """A clip's channel in dB at ``freqs``: tilt around 1 kHz, one broad bump or notch, maybe a low-pass."""
    octaves = np.log2(np.maximum(freqs, 20.0) / 1000.0)
    gain = rng.uniform(-_TILT_DB, _TILT_DB) * octaves
    at = np.log2(np.exp(rng.uniform(np.log(300.0), np.log(8000.0))) / 1000.0)
    gain += rng.uniform(-_BUMP_DB, _BUMP_DB) * np.exp(-0.5 * ((octaves - at) / 0.5) ** 2)
    if rng.random() < _LOWPASS_P:
        cut = rng.uniform(3000.0, 10000.0)
        gain -= 24.0 * np.maximum(0.0, np.log2(np.maximum(freqs, 1.0) / cut))
    return gain


def _render_clip(rng: np.random.Generator, n: int, labels: list[int], ev: ClassEvents, sr: int,
                 floor_db: float) -> np.ndarray:
    """A clip of ``n`` samples holding ``labels``' events at random times over other classes' textures,
    through a random channel, with a white floor and a random peak level (float32)."""
    x = np.zeros(n)
    gains = np.concatenate([[1.0], rng.uniform(*_SECONDARY_GAIN, size=len(labels) - 1)])
    for c, g in zip(labels, gains.tolist(), strict=True):
        for _ in range(1 + rng.poisson(n / sr / _EVENT_EVERY_S)):
            length = max(4, int(round(ev.seconds[c] * sr * rng.uniform(1 - _EVENT_JITTER, 1 + _EVENT_JITTER))))
            start = int(rng.integers(0, max(1, n - length + 1)))
            e = render_event(int(ev.kind[c]), int(ev.member[c]), float(ev.centre_hz[c]), length, sr, rng)
            x[start : start + length] += g * e[: n - start]
    rms = max(float(np.sqrt(np.mean(x**2))), 1e-12)
    groups = np.unique(ev.group)
    for g in rng.choice(groups, size=min(groups.size, int(rng.integers(_TEXTURES[0], _TEXTURES[1] + 1))),
                        replace=False):
        centre = float(ev.centre_hz[np.flatnonzero(ev.group == g)[0]])
        level = rms * 10 ** (rng.uniform(*_TEXTURE_DB) / 20)
        x += level * _band_noise(rng, n, centre / np.sqrt(2), min(centre * np.sqrt(2), 0.45 * sr), sr)
    m = _fast_len(n)
    spec = np.fft.rfft(x, n=m) * 10 ** (_channel_db(rng, np.fft.rfftfreq(m, 1 / sr)) / 20)
    y = np.fft.irfft(spec, n=m)[:n]
    rms = max(float(np.sqrt(np.mean(y**2))), 1e-12)
    y += rms * 10 ** (floor_db / 20) * rng.standard_normal(n)
    fade = min(int(_FADE_S * sr), n // 2)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        y[:fade] *= ramp
        y[n - fade :] *= ramp[::-1]
    y *= rng.uniform(*_PEAK) / max(float(np.abs(y).max()), 1e-12)
    return y.astype(np.float32)


@dataclass
class Planted:
    """The truth ``synth_fsd`` writes to ``_planted/planted.npz``: per clip (curated, noisy, test in that
    order) its fname, split and true labels (CSR ``offsets`` + ``labels``, class indices in name order),
    the class names and each class's :class:`ClassEvents`."""

    fnames: list[str]
    split: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    classes: list[str]
    events: ClassEvents
    sample_rate: int

    def true_labels(self) -> dict[str, list[int]]:
        """fname -> its true class indices."""
        return {f: self.labels[self.offsets[i] : self.offsets[i + 1]].tolist() for i, f in enumerate(self.fnames)}


def _save_planted(path: Path, p: Planted) -> None:
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, fnames=np.array(p.fnames), split=p.split, offsets=p.offsets, labels=p.labels,
                        classes=np.array(p.classes), sample_rate=np.array(p.sample_rate),
                        **{f"event_{k}": v for k, v in vars(p.events).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def read_planted(raw_dir: str | Path) -> Planted:
    """The truth of a ``synth_fsd`` folder (one error line when it has none, as a real release has not)."""
    path = planted_file(raw_dir, PLANTED, "fsd")
    try:
        d = read_npz(path)
        events = ClassEvents(**{k: d[f"event_{k}"] for k in ClassEvents.__dataclass_fields__})
        return Planted(d["fnames"].tolist(), d["split"], d["offsets"], d["labels"], d["classes"].tolist(), events,
                       int(d["sample_rate"]))
    except (OSError, ValueError, KeyError) as e:
        raise FstoreError(f"{path}: unreadable planted truth ({e})") from None


def synth_fsd(
    out_dir: str | Path,
    curated: int = 400,
    noisy: int = 600,
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
    (clips counts curated + noisy + test clips; files counts the release's files and the truth file).
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError("need 0 < min_seconds <= max_seconds")
    if curated < 0 or noisy < 0 or test_clips < 0:
        raise ValueError("clip counts must be >= 0")
    out = prepare_out_dir(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    names = fsd_class_names(classes, seed)
    ev = fsd_class_events(classes, sample_rate, seed)

    splits = ((S.TRAIN_SPLITS[0][0], curated), (S.TRAIN_SPLITS[1][0], noisy), (S.TEST_DIR, test_clips))
    fnames_all = hex_ids(rng, curated + noisy + test_clips, 8)
    written: list[Path] = []
    truth_fnames: list[str] = []
    truth_split: list[int] = []
    truth_labels: list[list[int]] = []
    pos = 0
    for split_index, (split, n) in enumerate(splits):
        fnames = sorted(f"{h}.wav" for h in fnames_all[pos : pos + n])
        pos += n
        (out / split).mkdir(parents=True, exist_ok=True)
        true = _draw_labels(rng, n, classes, cover=split == S.TRAIN_SPLITS[0][0])
        listed = _corrupt(rng, true, classes) if split == S.TRAIN_SPLITS[1][0] else true
        lengths = np.exp(rng.uniform(np.log(min_seconds), np.log(max_seconds), size=n))
        lengths = np.maximum(1, np.round(lengths * sample_rate)).astype(np.int64)
        floor_db = _FLOOR_DB["noisy" if split == S.TRAIN_SPLITS[1][0] else "curated"]
        for fname, lab, length in zip(fnames, true, lengths.tolist(), strict=True):
            p = out / split / fname
            sf.write(p, _render_clip(rng, length, lab, ev, sample_rate, floor_db), sample_rate, subtype="PCM_16",
                     format="WAV")
            written.append(p)
        truth_fnames += fnames
        truth_split += [split_index] * n
        truth_labels += true
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

    counts = np.array([len(lab) for lab in truth_labels], dtype=np.int64)
    flat = [c for lab in truth_labels for c in lab]
    planted = Planted(truth_fnames, np.array(truth_split, dtype=np.int8), np.concatenate([[0], np.cumsum(counts)]),
                      np.array(flat, dtype=np.int16), names, ev, sample_rate)
    _save_planted(out / PLANTED, planted)
    written.append(out / PLANTED)
    return SynthSummary(
        files=len(written), clips=curated + noisy + test_clips, classes=classes, bytes=tree_size(written)
    )
