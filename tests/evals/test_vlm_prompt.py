"""vlm_prompt: the plain image-token form (the toy VLM's), a processor chat template, a tokenizer chat template."""

from __future__ import annotations

import pytest

from evals.vlm_prompt import vlm_prompt
from pruning.models.toy_vlm import ToyVLMSpec, build_processor, build_tokenizer

PROCESSOR_TEMPLATE = (
    "{% for message in messages %}USER: {% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
TOKENIZER_TEMPLATE = "{% for message in messages %}<user>{{ message['content'] }}</user>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


def _processor():
    return build_processor(build_tokenizer(["what", "?"]), ToyVLMSpec())


def test_without_chat_template_the_image_token_leads():
    processor = _processor()
    assert vlm_prompt(processor, "what ?") == "<image>\nwhat ?"
    assert vlm_prompt(processor, "what ?", n_images=2) == "<image>\n<image>\nwhat ?"
    assert vlm_prompt(processor, "what ?", n_images=0) == "what ?"


def test_processor_chat_template_gets_an_image_and_the_text():
    processor = _processor()
    processor.chat_template = PROCESSOR_TEMPLATE
    assert vlm_prompt(processor, "what ?") == "USER: <image>\nwhat ?\nASSISTANT:"


def test_tokenizer_chat_template_gets_the_placeholder_in_the_text():
    processor = _processor()
    processor.tokenizer.chat_template = TOKENIZER_TEMPLATE
    assert vlm_prompt(processor, "what ?") == "<user><image>\nwhat ?</user><assistant>"
    assert vlm_prompt(processor.tokenizer, "what ?", n_images=0) == "<user>what ?</user><assistant>"


def test_no_image_token_and_no_template():
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab={"<unk>": 0}, unk_token="<unk>")))
    with pytest.raises(ValueError, match="no image token"):
        vlm_prompt(tokenizer, "what ?")
