from pointea.tables import markdown_table


def test_markdown_table_pads_columns_to_the_widest_cell():
    text = markdown_table(("what", "files/s"), [("read", 231.0), ("predict, batch 32", "13.9")])
    assert text.splitlines() == [
        "| what              | files/s |",
        "|-------------------|---------|",
        "| read              | 231.0   |",
        "| predict, batch 32 | 13.9    |",
    ]
