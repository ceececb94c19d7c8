"""Department-scoped views of golden records: sharing policy, masks, disclosure checks, exports.

The policy (:func:`load_policy`, default linkage/data/sharing.yaml) says what each department
may see; the check refuses a policy whose department exports, alone or joined, reveal more than
granted; :func:`export_view` builds one department's view. Everything not listed may change.
"""

from linkage.share.export import (
    EXPORT_FLAGS,
    PERSONS,
    PSEUDONYM_ID,
    SOURCE_RECORDS,
    SOURCES,
    department_key,
    export_view,
    mask_list,
    mask_values,
    pseudonymize,
    view_rows,
    write_export,
)
from linkage.share.policy import (
    DEFAULT_POLICY_PATH,
    GRANTABLE_FIELDS,
    MASK_LEVELS,
    DepartmentPolicy,
    SharingPolicy,
    cross_department_conflicts,
    describe_policy,
    disclosed_levels,
    effective_department,
    join_keys,
    load_policy,
    policy_from_dict,
)

__all__ = [
    "DEFAULT_POLICY_PATH",
    "EXPORT_FLAGS",
    "GRANTABLE_FIELDS",
    "MASK_LEVELS",
    "PERSONS",
    "PSEUDONYM_ID",
    "SOURCES",
    "SOURCE_RECORDS",
    "DepartmentPolicy",
    "SharingPolicy",
    "cross_department_conflicts",
    "department_key",
    "describe_policy",
    "disclosed_levels",
    "effective_department",
    "export_view",
    "join_keys",
    "load_policy",
    "mask_list",
    "mask_values",
    "policy_from_dict",
    "pseudonymize",
    "view_rows",
    "write_export",
]
