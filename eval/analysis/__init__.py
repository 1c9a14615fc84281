"""The results side of evaluation: collection of finished runs, statistics, tables, figures,
job times and grid plans."""
