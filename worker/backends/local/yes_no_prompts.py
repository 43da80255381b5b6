"""The prompts of causal-LM yes/no rerankers: how a (query, document) pair becomes the text a model
continues with its verdict, one template per model family.

A prompt is ``prefix + body + suffix``. The prefix and suffix are fixed (a chat frame and the question);
the body holds the instruction, the query and, last, the document, so cutting the body's tokens from the
end cuts the document first. Torch-free, so the test servers in ``testkit`` format the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ModelSpecError


@dataclass(frozen=True)
class PromptTemplate:
    """One family's prompt and verdict labels. ``instruction_line`` and ``query_line`` are ``str.format``
    patterns (``{instruction}``, ``{query}``); ``document_lead`` comes right before the document. With no
    instruction (none given and no ``default_instruction``) the instruction line is left out."""

    name: str
    prefix: str
    instruction_line: str
    query_line: str
    document_lead: str
    suffix: str
    yes_token: str
    no_token: str
    default_instruction: str | None

    def body(self, query: str, document: str, instruction: str | None) -> str:
        """The part of the prompt that may be cut to fit, ending with the document."""
        head = self.instruction_line.format(instruction=instruction) if instruction else ""
        return head + self.query_line.format(query=query) + self.document_lead + document

    def prompt(self, query: str, document: str, instruction: str | None) -> str:
        """The whole prompt of one pair, uncut."""
        return self.prefix + self.body(query, document, instruction) + self.suffix


# Qwen3-Reranker's format, from its model card.
QWEN3 = PromptTemplate(
    name="qwen3",
    prefix=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
        'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    ),
    instruction_line="<Instruct>: {instruction}\n",
    query_line="<Query>: {query}\n",
    document_lead="<Document>: ",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    yes_token="yes",
    no_token="no",
    default_instruction="Given a web search query, retrieve relevant passages that answer the query",
)

# mixedbread's mxbai-rerank-v2 (Qwen2 based) format, as its reference code builds it: the task prompt
# after the document, a Qwen chat frame, and the verdict "1" (relevant) or "0"; no instruction by default.
MXBAI = PromptTemplate(
    name="mxbai",
    prefix=(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
        "<|im_end|>\n<|im_start|>user\n"
    ),
    instruction_line="instruction: {instruction}\n",
    query_line="query: {query}\n",
    document_lead="document: ",
    suffix=(
        "\nYou are a search relevance expert who evaluates how well documents match search queries. For "
        "each query-document pair, carefully analyze the semantic relationship between them, then provide "
        "your binary relevance judgment (0 for not relevant, 1 for relevant).\nRelevance:"
        "<|im_end|>\n<|im_start|>assistant\n"
    ),
    yes_token="1",
    no_token="0",
    default_instruction=None,
)

TEMPLATES: dict[str, PromptTemplate] = {template.name: template for template in (QWEN3, MXBAI)}
DEFAULT_TEMPLATE = QWEN3.name


def template_named(name: str | None) -> PromptTemplate:
    """The template ``name`` (the default one for None); raises ``ModelSpecError`` for an unknown name."""
    template = TEMPLATES.get(name or DEFAULT_TEMPLATE)
    if template is None:
        raise ModelSpecError(
            f"option template={name!r} is not a known template; use one of {', '.join(TEMPLATES)}"
        )
    return template
