"""The verified bilingual routing dataset (when to write code, when not to): `hessgpt data routing`.

Four categories share the positive samples equally: `maths` (arithmetic, percentages, equations,
derivatives and integrals with sympy, statistics, word problems), `algo` (sorting, search, Fibonacci,
factorial, primes, strings, stacks/queues), `web` (HTML/CSS/JS *artifacts*: code_lang html/css/js, never
executed, no tool message) and `data` (lists, dicts, JSON parsing, arrays). `negative` samples
(greetings, facts, opinions, definitions) are answered directly, without code, so the model also learns
when NOT to call the interpreter.

Every Python sample goes through the sandbox (hessgpt.tools.sandbox, never this process); the tool
message holds the real stdout and the final sentence is built from it (a template filled with the
output's text), so no sample states a number the code did not print. Failed runs are dropped and
counted. Generation is deterministic for a seed; user prompts are deduplicated (case/space-insensitive).
The record id is `routing:<category>-<hash>`.

One module per concern (imports flow down this list):

- `cli`: `hessgpt data routing` / `python -m hessgpt.data.routing` (flags, --validate, the report);
- `mix`: search conversations mixed into the three splits (`--search-share`);
- `check`: --validate, a file written elsewhere checked by running its code;
- `build`: `generate` (candidates -> sandbox -> agreeing records, statistics) and `generate_splits`
  (train / dev / test with their own seeds, multi-turn conversations added); `PYTHON_GENS`;
- `maths`, `algo`, `data`, `web`, `negatives`: the generators of each category (`GENS`: kind, generator, weight);
- `reference`: the independent references and `agrees` (reference vs the sandbox's stdout);
- `candidate`: `Candidate` and the record it becomes;
- `phrasing`: the composed question parts (framings, cores, number words; each list split three ways);
- `words`: the wrapping every request shares (`_wrap`), lead-ins, and the names, words and sentences drawn from;
- `splits`: `partition`, `SplitRandom` (train / dev / test never share a template, an entity or an operand);
- `multiturn`: 2-3 turn conversations composed from single-turn records;
- `search`: search conversations over the shipped corpus (hessgpt/data/search_corpus);
- `output`: where the files go, written whole.
"""
