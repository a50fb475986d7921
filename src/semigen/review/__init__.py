"""(5) review: the user in the loop, in a browser (`semigen review RUN`): check pseudo-labels,
label the suggested images by keyboard, correct likely errors among their own labels, see the
generated images; every decision lands in RUN/added_labels.csv, which the next `label` / `fit`
of the run takes as true labels. `state` computes what the pages show, `app` serves them."""
