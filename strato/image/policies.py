"""Image service default policy rules (Glance's names).

The target's ``project_id`` is the image owner; visibility (who may see an image at
all) is decided in strato.image.api before policy is asked.
"""

from oslo_policy.policy import RuleDefault

MEMBER = "rule:admin_or_member"
READER = "rule:admin_required or role:reader"

RULES = [
    RuleDefault("add_image", MEMBER),
    RuleDefault("get_image", READER),
    RuleDefault("get_images", READER),
    RuleDefault("modify_image", MEMBER),
    RuleDefault("delete_image", MEMBER),
    RuleDefault("upload_image", MEMBER),
    RuleDefault("download_image", READER),
    RuleDefault("publicize_image", "rule:admin_required"),
    RuleDefault("communitize_image", MEMBER),
    # Glance's default since Wallaby: an admin, or a member of the owner's project.
    RuleDefault("deactivate", MEMBER),
    RuleDefault("reactivate", MEMBER),
    RuleDefault("add_image_stage", MEMBER),
    RuleDefault("import_image", MEMBER),
    RuleDefault("get_stores", READER),
    RuleDefault("get_stores_detail", "rule:admin_required"),
    RuleDefault("delete_image_location", "rule:admin_required"),
    # Glance: copying an image into other stores is for (project) admins.
    RuleDefault("copy_image", "rule:admin_required"),
    RuleDefault("get_usage", READER),
    # Metadata definitions: everyone reads (visibility permitting), admins write.
    *(RuleDefault(name, READER) for name in (
        "get_metadef_namespaces", "get_metadef_namespace", "list_metadef_resource_types",
        "get_metadef_properties", "get_metadef_property", "get_metadef_objects",
        "get_metadef_object", "get_metadef_tags", "get_metadef_tag")),
    *(RuleDefault(name, "rule:admin_required") for name in (
        "add_metadef_namespace", "modify_metadef_namespace", "delete_metadef_namespace",
        "add_metadef_resource_type_association",
        "remove_metadef_resource_type_association", "add_metadef_property",
        "modify_metadef_property", "remove_metadef_property", "add_metadef_object",
        "modify_metadef_object", "delete_metadef_object", "add_metadef_tags",
        "delete_metadef_tags", "add_metadef_tag", "modify_metadef_tag",
        "delete_metadef_tag")),
    # The tasks API: admin only since Wallaby.
    RuleDefault("get_tasks", "rule:admin_required"),
    RuleDefault("get_task", "rule:admin_required"),
    RuleDefault("add_task", "rule:admin_required"),
    RuleDefault("modify_task", "rule:admin_required"),
    RuleDefault("add_member", MEMBER),
    RuleDefault("delete_member", MEMBER),
    RuleDefault("get_member", READER),
    RuleDefault("get_members", READER),
    RuleDefault("modify_member", "rule:admin_required or role:member"),
]
