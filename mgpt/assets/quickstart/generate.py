"""Regenerate the quickstart sentiment data (synthetic, templated; see README.md here).

    python mgpt/assets/quickstart/generate.py

Deterministic: the same files every time. Test sentences use subjects and phrases that never
appear in training, so the score measures transfer from the pretrained encoder, not memorisation.
"""

import csv
import os
import random

SUBJECTS_TRAIN = ["the battery", "the screen", "the delivery", "customer support", "the camera", "the keyboard",
                  "the app", "the price", "the sound quality", "the packaging", "the charger", "the manual"]
SUBJECTS_HELDOUT = ["the speakers", "the refund process", "the installation", "the touchpad", "the warranty service",
                    "the fabric"]
POSITIVE_TRAIN = ["works perfectly", "exceeded my expectations", "is excellent", "made me very happy",
                  "is worth every penny", "is fantastic", "feels great", "was a pleasant surprise",
                  "is the best I have used", "impressed the whole family"]
NEGATIVE_TRAIN = ["stopped working after a week", "is a total disappointment", "is awful", "made me angry",
                  "is a waste of money", "is terrible", "feels cheap and flimsy", "was a nasty surprise",
                  "is the worst I have used", "broke on the first day"]
POSITIVE_HELDOUT = ["is simply wonderful", "delighted me", "is superb", "works like a charm", "is a joy to use"]
NEGATIVE_HELDOUT = ["is simply dreadful", "annoyed me endlessly", "is useless", "fails constantly", "is a nightmare to use"]
FRAMES = ["{s} {p}.", "Honestly, {s} {p}.", "I have to say {s} {p}!", "After a month of use, {s} {p}.",
          "{s} {p}, as far as I can tell.", "My verdict: {s} {p}."]


def sentences(subjects, positive, negative, count, rng):
    rows = []
    for _ in range(count):
        label = rng.choice(["positive", "negative"])
        phrase = rng.choice(positive if label == "positive" else negative)
        text = rng.choice(FRAMES).format(s=rng.choice(subjects), p=phrase)
        rows.append((text[0].upper() + text[1:], label))
    return rows


def main():
    rng = random.Random(17)
    here = os.path.dirname(os.path.abspath(__file__))
    splits = {
        "train": sentences(SUBJECTS_TRAIN, POSITIVE_TRAIN, NEGATIVE_TRAIN, 320, rng),
        "validation": sentences(SUBJECTS_TRAIN, POSITIVE_TRAIN, NEGATIVE_TRAIN, 64, rng),
        "test": sentences(SUBJECTS_HELDOUT, POSITIVE_HELDOUT, NEGATIVE_HELDOUT, 128, rng),
    }
    for split, rows in splits.items():
        with open(os.path.join(here, f"{split}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)


if __name__ == "__main__":
    main()
