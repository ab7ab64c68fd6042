"""Task functions of the toy image-QA fixture (tests only): one coloured square per image."""

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc):
    return doc["question"]


def doc_to_choice(doc):
    return doc["choices"]


def doc_to_target(doc):
    return doc["answer"]


def process_results(doc, results):
    """Exact match overall and per question type (colour / position)."""
    correct = float(results[0].strip() == doc["answer"])
    return {"exact_match": correct, f"{doc['question_type']}_exact_match": correct}
