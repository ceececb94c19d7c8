"""Chinese-script knowledge shared by the standardizers and comparisons.

``script`` (traditional -> simplified, GBK check), ``readings`` (character and surname
readings), ``surnames`` (compound and common surnames, surname split), ``syllables`` (pinyin
syllables, romanized-name splitting, fuzzy pinyin), ``romanization`` (Cantonese and Wade-Giles
spellings), ``lookalike`` (characters of similar shape). Imports nothing from other stages.
"""
