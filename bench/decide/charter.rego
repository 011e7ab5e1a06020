# The default charter's read rules, in Rego, for the side-by-side benchmark.
# Same facts as the Cedar side: data holds datasets, users, organisation
# groups and agreements indexed by "dataset|purpose"; input is one read.
package citytrust

import rego.v1

default allow := false

dataset := data.datasets[input.dataset]

orgs := data.users[input.user].orgs

recipients contains sprintf("user:%s", [input.user])

recipients contains sprintf("organization:%s", [o]) if some o in orgs

recipients contains sprintf("group:%s", [g]) if {
	some o in orgs
	some g in data.org_groups[o]
}

owner if dataset.owner in orgs

agreement_level := max({a.level |
	some a in data.agreements[concat("|", [input.dataset, input.purpose])]
	a.recipient in recipients
	a.start <= input.today
	input.today <= a.end
})

permit if dataset.spectrum == "open"

permit if owner

permit if {
	input.signed_in
	agreement_level >= input.level
}

forbid if {
	dataset.spectrum == "closed"
	not owner
}

forbid if {
	dataset.needs_reassessment
	not owner
}

allow if {
	permit
	not forbid
}
