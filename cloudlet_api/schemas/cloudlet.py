"""JSON schemas of the ``os-cloudlet`` server actions (requests and responses)."""

from nova.api.validation import parameter_types

cloudlet_base = {
    'type': 'object',
    'properties': {
        'cloudlet-base': {
            'type': 'object',
            'properties': {
                'name': parameter_types.name,
            },
            'required': ['name'],
            'additionalProperties': False,
        },
    },
    'required': ['cloudlet-base'],
    'additionalProperties': False,
}

cloudlet_overlay_finish = {
    'type': 'object',
    'properties': {
        'cloudlet-overlay-finish': {
            'type': 'object',
            'properties': {
                'overlay-name': parameter_types.name,
            },
            'required': ['overlay-name'],
            'additionalProperties': False,
        },
    },
    'required': ['cloudlet-overlay-finish'],
    'additionalProperties': False,
}

cloudlet_handoff = {
    'type': 'object',
    'properties': {
        'cloudlet-handoff': {
            'type': 'object',
            'properties': {
                # file://<overlay name> keeps the residue in Glance; http(s):// is the
                # destination cloudlet's compute endpoint.
                'handoff_url': {
                    'type': 'string', 'minLength': 1, 'maxLength': 2048,
                    'pattern': r'^(file|https?)://[^/\s]+',
                },
                'dest_token': {'type': 'string', 'minLength': 1, 'maxLength': 8192},
                'dest_vmname': parameter_types.name,
            },
            'required': ['handoff_url'],
            'additionalProperties': False,
        },
    },
    'required': ['cloudlet-handoff'],
    'additionalProperties': False,
}

cloudlet_base_response = {
    'type': 'object',
    'properties': {
        'base-disk': parameter_types.image_id,
        'base-memory': parameter_types.image_id,
        'base-disk-hash': parameter_types.image_id,
        'base-memory-hash': parameter_types.image_id,
    },
    'required': ['base-disk', 'base-memory', 'base-disk-hash', 'base-memory-hash'],
    'additionalProperties': False,
}

cloudlet_overlay_finish_response = {
    'type': 'object',
    'properties': {
        'overlay-id': parameter_types.image_id,
        'overlay-name': {'type': 'string'},
    },
    'required': ['overlay-id', 'overlay-name'],
    'additionalProperties': False,
}

# http(s): the handoff_url; file://: the id of the overlay image being made.
cloudlet_handoff_response = {
    'type': 'object',
    'properties': {'handoff': {'type': 'string'}},
    'required': ['handoff'],
    'additionalProperties': False,
}

# GET /os-cloudlet-bases: no query parameters.
cached_bases_query = {
    'type': 'object',
    'properties': {},
    'additionalProperties': False,
}

_id_list = {'type': 'array', 'items': {'type': 'string'}}

cached_bases_response = {
    'type': 'object',
    'properties': {
        'hosts': {
            'type': 'array',
            'items': {
                'type': 'object',
                'properties': {
                    'host': {'type': ['string', 'null']},
                    'node': {'type': ['string', 'null']},
                    'bases': _id_list,
                    'base_images': _id_list,
                },
                'required': ['host', 'node', 'bases', 'base_images'],
                'additionalProperties': False,
            },
        },
    },
    'required': ['hosts'],
    'additionalProperties': False,
}
