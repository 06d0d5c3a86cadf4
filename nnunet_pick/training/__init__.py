"""The PICK trainer (:mod:`.trainer`), its variants (:mod:`.variants`), logging (:mod:`.progress`) and figure."""
