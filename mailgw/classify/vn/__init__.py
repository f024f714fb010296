"""Vietnamese text and official-document conventions, used by the classify stage."""
