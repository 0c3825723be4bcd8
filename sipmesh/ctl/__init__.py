"""``sipmesh ctl``: kamctl's verbs. Table data is written straight to the database
(like kamctl); the admin issue adds the verbs that need the admin API."""
