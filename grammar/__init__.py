"""The Lark grammar of the text language, shipped inside the wheel."""
