"""The embedded default's general (non-reasoning) data: small chat questions, generated deterministically.

DeepSeek-R1 mixes general data into its post-rejection-sampling SFT set and judges general prompts with reward models
in its all-scenario RL stage. On the embedded default those data come from here, so every stage runs offline:

- `make_general_chat`: everyday questions ("What color is the sky?") with short, polite, on-topic answers written in
  R1's output format, as `messages` for SFT.
- `make_preference_pairs`: a preferred and a dispreferred answer to the same question, for `recipes/reward_model.py`.
  Dispreferred answers are off-topic (the answer to another question), rude (an insult in the summary or hidden in
  the reasoning only), or empty. Helpfulness and harmlessness are thus both in the pairs; the reward model sees the
  responses whole or as their summary after `</think>`, the two views the all-scenario reward judges.
- `make_all_scenario_splits`: the built-in arithmetic problems (`scenario = "reasoning"`) mixed with general questions
  (`scenario = "general"`) for the all-scenario RL stage (the `scenario` reward routes on that column).

Facts are split once into a train and a held-out part, so held-out pairs and prompts ask about subjects never seen
in training.
"""

import random

from datasets import Dataset, DatasetDict, Features, Value

from recipes.lib.task import R1_ZERO_SYSTEM_PROMPT, make_prompt, make_splits
from rewards import strip_think

FACTS = (
    ("the sky", "What color is the sky on a clear day?", "The sky is blue on a clear day."),
    ("grass", "What color is grass?", "Grass is green."),
    ("snow", "What color is fresh snow?", "Fresh snow is white."),
    ("a cat", "What sound does a cat make?", "A cat says meow."),
    ("a dog", "What sound does a dog make?", "A dog barks: woof."),
    ("a cow", "What sound does a cow make?", "A cow says moo."),
    ("a week", "How many days are in a week?", "A week has seven days."),
    ("a year", "How many months are in a year?", "A year has twelve months."),
    ("an hour", "How many minutes are in an hour?", "An hour has sixty minutes."),
    ("water", "At what temperature does water boil at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("ice", "What happens to ice when it gets warm?", "Ice melts into water when it gets warm."),
    ("the sun", "Where does the sun rise?", "The sun rises in the east."),
    ("the moon", "What does the moon orbit?", "The moon orbits the Earth."),
    ("bees", "What do bees make?", "Bees make honey."),
    ("spiders", "How many legs does a spider have?", "A spider has eight legs."),
    ("insects", "How many legs does an insect have?", "An insect has six legs."),
    ("a triangle", "How many sides does a triangle have?", "A triangle has three sides."),
    ("a square", "How many sides does a square have?", "A square has four sides."),
    ("bread", "What is bread made from?", "Bread is made from flour, water and yeast."),
    ("tea", "How do you make tea?", "Pour hot water over tea leaves and let them steep."),
    ("plants", "What do plants need to grow?", "Plants need light, water and air to grow."),
    ("fish", "How do fish breathe?", "Fish breathe with their gills."),
    ("birds", "How do most birds move through the air?", "Most birds fly with their wings."),
    ("the ocean", "Why is the ocean salty?", "The ocean is salty because rivers carry dissolved minerals into it."),
    ("rain", "Where does rain come from?", "Rain falls from clouds when water droplets grow heavy."),
    ("a rainbow", "How many colors does a rainbow have?", "A rainbow is usually described with seven colors."),
    ("teeth", "How often should you brush your teeth?", "Brush your teeth twice a day."),
    ("sleep", "How much sleep do adults need?", "Most adults need seven to nine hours of sleep."),
    ("a bicycle", "How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("a piano", "How many keys does a standard piano have?", "A standard piano has 88 keys."),
    ("the alphabet", "How many letters are in the English alphabet?", "The English alphabet has 26 letters."),
    ("a library", "What can you borrow from a library?", "You can borrow books from a library."),
    ("a thermometer", "What does a thermometer measure?", "A thermometer measures temperature."),
    ("a clock", "What does a clock show?", "A clock shows the time."),
    ("apples", "What color can apples be?", "Apples can be red, green or yellow."),
    ("bananas", "What color is a ripe banana?", "A ripe banana is yellow."),
    ("lemons", "How does a lemon taste?", "A lemon tastes sour."),
    ("sugar", "How does sugar taste?", "Sugar tastes sweet."),
    ("a map", "What is a map used for?", "A map shows where places are and how to get there."),
    ("an umbrella", "What is an umbrella for?", "An umbrella keeps you dry in the rain."),
    ("a hello", "Hello! How are you?", "Hello! I am doing well, thank you for asking."),
    ("thanks", "Thank you for your help!", "You are welcome. I am glad I could help."),
    ("a greeting", "Good morning!", "Good morning! I hope you have a nice day."),
    ("winter", "Which season is usually the coldest?", "Winter is usually the coldest season."),
    ("summer", "Which season is usually the warmest?", "Summer is usually the warmest season."),
    ("a dozen", "How many items are in a dozen?", "A dozen is twelve items."),
    ("a minute", "How many seconds are in a minute?", "A minute has sixty seconds."),
    ("the heart", "What does the heart do?", "The heart pumps blood through the body."),
)
"""(subject, question, helpful answer): the knowledge behind every general sample."""

QUESTION_FORMS = (
    "{question}",
    "Can you tell me this: {question}",
    "Quick question. {question}",
    "Please answer: {question}",
)
POLITE_FORMS = ("{answer}", "Sure! {answer}", "Good question. {answer}", "{answer} I hope this helps.")
RUDE_REMARKS = (
    "What a stupid question.",
    "Figure it out yourself, idiot.",
    "Stop wasting my time.",
    "Only a fool would ask that.",
    "Go away and leave me alone.",
)
REJECTION_KINDS = ("off_topic", "rude_summary", "rude_thinking", "empty")
"""How a dispreferred answer is bad: another question's answer, an insult in the summary, an insult hidden in the
reasoning only (caught only by judging the whole response), or nothing at all."""

HELDOUT_FACT_EVERY = 5  # every fifth fact is held out


def fact_split(heldout: bool) -> list[tuple[str, str, str]]:
    """The train or held-out facts; fixed, independent of any seed."""
    return [fact for i, fact in enumerate(FACTS) if (i % HELDOUT_FACT_EVERY == HELDOUT_FACT_EVERY - 1) == heldout]


def r1_response(subject: str, answer: str, thought: str | None = None) -> str:
    """A general answer in R1's output format: a short reasoning in `<think>`, the reply in `<answer>`."""
    thought = thought if thought is not None else f"The user asks about {subject}."
    return f"<think>\n{thought}\n</think>\n<answer>\n{answer}\n</answer>"


def _question(fact, rng: random.Random) -> str:
    return rng.choice(QUESTION_FORMS).format(question=fact[1])


def _polite(fact, rng: random.Random) -> str:
    return rng.choice(POLITE_FORMS).format(answer=fact[2])


def make_general_chat(
    n: int, *, seed: int = 0, heldout: bool = False, system_prompt: str | None = R1_ZERO_SYSTEM_PROMPT
) -> Dataset:
    """`n` general chat samples as `messages` (system, user, assistant), with `problem` and `source` columns.

    The system prompt defaults to R1's, so general samples share the reasoning samples' layout in the SFT mix.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    rng, facts = random.Random(f"general-chat-{seed}-{heldout}"), fact_split(heldout)
    rows = []
    for _ in range(n):
        fact = rng.choice(facts)
        question = _question(fact, rng)
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages = [
            *system,
            {"role": "user", "content": question},
            {"role": "assistant", "content": r1_response(fact[0], _polite(fact, rng))},
        ]
        rows.append({"messages": messages, "problem": question, "source": "general"})
    return Dataset.from_list(rows)


def _rejected(kind: str, fact, facts, rng: random.Random) -> str:
    if kind == "off_topic":
        other = rng.choice([f for f in facts if f is not fact])
        return r1_response(other[0], _polite(other, rng))
    if kind == "rude_summary":
        return r1_response(fact[0], f"{rng.choice(RUDE_REMARKS)} {fact[2]}")
    if kind == "rude_thinking":
        return r1_response(
            fact[0], _polite(fact, rng), thought=f"{rng.choice(RUDE_REMARKS)} The user asks about {fact[0]}."
        )
    return r1_response(fact[0], "", thought="")


def make_preference_pairs(n: int, *, seed: int = 0, heldout: bool = False, summary_share: float = 0.5) -> Dataset:
    """`n` preference pairs: columns `prompt` (R1's system prompt and a user turn, as the all-scenario RL prompts
    with `prompt_template: chat`), `chosen`, `rejected` (assistant turns), `kind` and `view`.

    A share `summary_share` of the pairs show the reward model only the summaries after `</think>` (`view` =
    "summary"), the rest the whole responses (`view` = "full"); a hidden insult ("rude_thinking") is only visible
    whole, so those pairs are always full.
    """
    if n < 0 or not 0.0 <= summary_share <= 1.0:
        raise ValueError(f"n must be >= 0 and summary_share in [0, 1], got n={n}, summary_share={summary_share}.")
    rng, facts = random.Random(f"preferences-{seed}-{heldout}"), fact_split(heldout)
    rows = []
    for i in range(n):
        fact, kind = rng.choice(facts), REJECTION_KINDS[i % len(REJECTION_KINDS)]
        chosen, rejected = r1_response(fact[0], _polite(fact, rng)), _rejected(kind, fact, facts, rng)
        view = "summary" if kind != "rude_thinking" and rng.random() < summary_share else "full"
        if view == "summary":
            chosen, rejected = strip_think(chosen), strip_think(rejected)  # what the helpfulness judge reads
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": R1_ZERO_SYSTEM_PROMPT},
                    {"role": "user", "content": _question(fact, rng)},
                ],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "kind": kind,
                "view": view,
            }
        )
    return Dataset.from_list(rows)


def make_preference_splits(
    seed: int = 0, n_train: int = 1000, n_test: int = 200, summary_share: float = 0.5
) -> DatasetDict:
    """Train and held-out preference pairs; the held-out pairs ask about facts that no train pair mentions."""
    return DatasetDict(
        train=make_preference_pairs(n_train, seed=seed, heldout=False, summary_share=summary_share),
        test=make_preference_pairs(n_test, seed=seed, heldout=True, summary_share=summary_share),
    )


ALL_SCENARIO_FEATURES = Features({column: Value("string") for column in ("prompt", "problem", "solution", "scenario")})


def make_all_scenario_splits(
    seed: int = 0, n_train: int = 400, n_test: int = 100, general_share: float = 0.5
) -> DatasetDict:
    """Reasoning and general prompts mixed for all-scenario RL: columns `prompt`, `problem`, `solution`, `scenario`.

    Reasoning rows are the built-in task's (with their gold `solution`); general rows are questions with an empty
    `solution` (no rule can verify them; the reward model judges them). `general_share` of each split is general.
    """
    if not 0.0 <= general_share <= 1.0:
        raise ValueError(f"general_share must be in [0, 1], got {general_share}.")
    n_general = {"train": round(n_train * general_share), "test": round(n_test * general_share)}
    task = make_splits(
        seed=seed, n_train=n_train - n_general["train"], n_test=n_test - n_general["test"], n_validation=0, n_ood=0
    )
    splits = {}
    for split in n_general:
        dataset = task[split]
        chat = make_general_chat(n_general[split], seed=seed, heldout=split == "test", system_prompt=None)
        general_problems = chat["problem"] if len(chat) else []
        reasoning_problems = dataset["problem"] if len(dataset) else []
        splits[split] = Dataset.from_dict(
            {
                "prompt": [
                    make_prompt(problem) for problem in [*reasoning_problems, *general_problems]
                ],  # one template
                "problem": [*reasoning_problems, *general_problems],
                "solution": [*(dataset["solution"] if len(dataset) else []), *([""] * len(general_problems))],
                "scenario": ["reasoning"] * len(reasoning_problems) + ["general"] * len(general_problems),
            },
            features=ALL_SCENARIO_FEATURES,
        ).shuffle(seed=seed)
    return DatasetDict(splits)
