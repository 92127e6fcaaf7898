"""Error text is one line and never cut in the middle of a word."""

from agentkeep.db.messages import ELLIPSIS, shorten


def test_a_long_message_is_cut_at_a_word_boundary():
    text = "cannot connect to the server because the connection was refused by the host"
    short = shorten(text, 40)
    assert len(short) <= 40 and short.endswith(ELLIPSIS)
    assert text.startswith(short[:-1]) and text[len(short) - 1] == " "  # the cut falls between words


def test_a_short_message_is_kept_on_one_line():
    assert shorten("refused\n\tIs the server running?", 80) == "refused Is the server running?"


def test_one_long_token_is_cut_to_the_limit():
    short = shorten("x" * 100, 20)
    assert len(short) == 20 and short.endswith(ELLIPSIS)
