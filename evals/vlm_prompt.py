"""The prompt a vision-language model sees for one question: one place, so training and evaluation agree."""

from __future__ import annotations


def vlm_prompt(processor, question_text: str, n_images: int = 1) -> str:
    """`question_text` as the user turn with `n_images` image placeholders, ready for the answer to follow.

    With a chat template (the processor's, else its tokenizer's) the template is applied with the
    generation prompt; without one the prompt is `f"{image_token}\\n{question_text}"` (one line per
    image). The processor expands each placeholder into the model's image tokens.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if getattr(processor, "chat_template", None) and hasattr(processor, "image_processor"):
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question_text}]
        return processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
    placeholders = [_image_token(processor)] * n_images if n_images else []
    text = "\n".join([*placeholders, question_text])
    if getattr(tokenizer, "chat_template", None):
        # a text model's template takes a string turn: the placeholder stays in the text
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
    return text


def _image_token(processor) -> str:
    """The placeholder the processor expands into image tokens (`<image>` for LLaVA)."""
    token = getattr(processor, "image_token", None) or getattr(getattr(processor, "tokenizer", None), "image_token", None)
    if not token:
        raise ValueError(f"{type(processor).__name__} names no image token and has no chat template: cannot place an image in the prompt")
    return token
