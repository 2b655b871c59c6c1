"""The web console at /console: sign-in (`auth`), the pages and their APIs (`pages`, `views`), the call
events behind a call's picture and the overview's figures (`figures`), and the live view's feed (`live`)."""
