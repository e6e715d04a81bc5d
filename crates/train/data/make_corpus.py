#!/usr/bin/env python3
"""Writes corpus.txt: the trainer's embedded default corpus.

Short, simple stories in plain English, written for this project (templates and word lists
below are original). Deterministic: the same script always writes the same bytes. Run it from
this directory: `python3 make_corpus.py`.
"""
import random

rng = random.Random(20260527)

NAMES = ["Mia", "Tom", "Lily", "Ben", "Sara", "Max", "Anna", "Leo", "Zoe", "Sam", "Nora", "Finn",
         "Ada", "Otto", "Ivy", "Jack"]
ANIMALS = ["cat", "dog", "bird", "fox", "frog", "duck", "bunny", "bear", "owl", "mouse", "fish",
           "turtle"]
PLACES = ["the park", "the garden", "the forest", "the beach", "the farm", "the hill",
          "the river", "the town", "the yard", "the lake"]
THINGS = ["ball", "kite", "box", "hat", "cake", "book", "drum", "boat", "cup", "shoe", "star",
          "stone", "leaf", "apple", "key", "sock"]
COLORS = ["red", "blue", "green", "yellow", "big", "small", "shiny", "soft", "tiny", "new"]
FEELINGS = ["happy", "sad", "scared", "proud", "tired", "excited", "sleepy", "brave", "curious"]
VERBS_PAST = ["ran", "jumped", "walked", "played", "sang", "danced", "looked", "hopped",
              "laughed", "waited"]
WEATHER = ["The sun was warm.", "It was a rainy day.", "The wind was cold.", "The sky was blue.",
           "Snow fell softly.", "The morning was quiet."]
ENDINGS = ["They were best friends after that.", "It was the best day ever.",
           "Then they went home for dinner.", "Everyone smiled.",
           "And they played together until the sun went down.",
           "From that day on, they always shared.", "Then it was time to sleep."]


def pick(xs):
    return rng.choice(xs)


def story_lost():
    n, a, t, c, p = pick(NAMES), pick(ANIMALS), pick(THINGS), pick(COLORS), pick(PLACES)
    return (f"Once upon a time, there was a little {a} named {n}. {n} had a {c} {t}. "
            f"One day, {n} went to {p} and lost the {t}. {n} was {pick(['sad', 'scared'])}. "
            f"{n} looked under a tree and behind a rock. Then a friendly {pick(ANIMALS)} said, "
            f"\"I saw your {t} near the {pick(['water', 'flowers', 'fence', 'path'])}.\" "
            f"{n} ran there and found the {c} {t}. {n} said, \"Thank you!\" {pick(ENDINGS)}")


def story_share():
    n1, n2 = rng.sample(NAMES, 2)
    t = pick(THINGS)
    c = pick(COLORS)
    return (f"{n1} and {n2} were playing in {pick(PLACES)}. {pick(WEATHER)} {n1} had a {c} {t}. "
            f"{n2} wanted to play with the {t} too. \"Can I have a turn?\" asked {n2}. "
            f"At first {n1} did not want to share. Then {n1} saw that {n2} was {pick(FEELINGS)}. "
            f"{n1} gave the {t} to {n2}. {n2} smiled and said, \"Let us play together.\" "
            f"{pick(ENDINGS)}")


def story_day():
    n = pick(NAMES)
    a = pick(ANIMALS)
    v1, v2 = rng.sample(VERBS_PAST, 2)
    return (f"{pick(WEATHER)} {n} woke up and felt {pick(FEELINGS)}. {n} went outside with a "
            f"{pick(COLORS)} {a}. They {v1} to {pick(PLACES)}. There they {v2} and played. "
            f"{n} found a {pick(COLORS)} {pick(THINGS)} on the ground. "
            f"\"Look!\" said {n}. The {a} was {pick(FEELINGS)} too. {pick(ENDINGS)}")


def story_help():
    n = pick(NAMES)
    a = pick(ANIMALS)
    t = pick(THINGS)
    return (f"One day, {n} saw a little {a} in {pick(PLACES)}. The {a} was stuck in a "
            f"{pick(['hole', 'bush', 'box', 'net'])}. \"Help me, please!\" said the {a}. "
            f"{n} was {pick(['brave', 'kind', 'strong'])}. {n} pulled and pulled, and the {a} "
            f"was free. The {a} was so happy. It gave {n} a {pick(COLORS)} {t} as a gift. "
            f"{pick(ENDINGS)}")


def story_count():
    n = pick(NAMES)
    t = pick(THINGS)
    k = rng.randint(2, 9)
    words = ["two", "three", "four", "five", "six", "seven", "eight", "nine"][k - 2]
    return (f"{n} had {words} {t}s. {n} put them in a row: "
            + ", ".join(str(i) for i in range(1, k + 1))
            + f". Then {n} gave one {t} to a friend. Now {n} had "
            + f"{['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight'][k - 2]} "
            + f"{t}{'s' if k - 1 > 1 else ''}. {pick(ENDINGS)}")


HAND_WRITTEN = [
    "The little boat sailed across the pond. A duck swam next to it and said, \"Where are you "
    "going?\" The boat did not answer, because boats cannot talk. The duck laughed and swam "
    "home. Then the wind pushed the boat back to the shore, where a girl named Ivy was waiting.",
    "Every night the moon looked down at the town. It saw the baker close his shop and the "
    "children go to bed. One night it saw a small owl that could not sleep. The moon sang a "
    "quiet song, and soon the owl closed its eyes.",
    "Otto wanted to build the tallest tower in the world. He put one block on top of another "
    "block. The tower grew and grew. Then his cat jumped on the table and the tower fell down. "
    "Otto did not cry. He said, \"Now I can build it again, and this time it will be taller.\"",
    "In a garden full of flowers lived a tiny bee. The bee liked the yellow flowers best. "
    "Every morning it flew from flower to flower and hummed a happy tune. When it rained, the "
    "bee hid under a big green leaf and waited for the sun.",
    "Nora had a red umbrella. When the rain came, she opened it and walked to school. On the "
    "way she met a frog who was too cold. Nora held the umbrella over the frog, and they walked "
    "together until the rain stopped.",
]

GENERATORS = [story_lost, story_share, story_day, story_help, story_count]


def main():
    stories = list(HAND_WRITTEN)
    total = sum(len(s) for s in stories)
    while total < 48_000:
        s = pick(GENERATORS)()
        stories.append(s)
        total += len(s) + 2
    rng.shuffle(stories)
    with open("corpus.txt", "w", encoding="ascii") as f:
        f.write("\n\n".join(stories) + "\n")


if __name__ == "__main__":
    main()
