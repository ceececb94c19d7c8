"""Chinese-script knowledge shared by the standardizers and comparisons.

``script`` (traditional -> simplified, GBK check), ``readings`` (character and surname
readings), ``surnames`` (compound and common surnames, surname split), ``syllables`` (pinyin
syllables, romanized-name splitting, fuzzy pinyin), ``romanization`` (Cantonese and Wade-Giles
spellings), ``lookalike`` (characters of similar shape), ``estate`` (road, estate and building in an
address detail below the district). Imports nothing from other stages.
"""
