#!/usr/bin/env python3
"""Deterministic synthetic GP-practice population for the search benchmark.

Usage: benches/gen_population.py N OUT.ndjson [--seed S] [--practices scaled|fixed]

Writes FHIR R4 JSON resources, one per line, every one with an explicit `id`
(so `fhirbridge import` stores it with a `PUT Type/id` and the ids are stable):

- Organization (GP practices, ODS code identifier) `org-01`.., Practitioner
  (SDS user id identifier) `prac-001`.. and Location (one site per practice)
  `loc-01`..: with `--practices scaled` (the default) as England has them, one
  practice per 5,000 patients and one GP per 2,000 (at least one of each: 20
  practices and 50 GPs at 100,000 patients, 1 and 1 at 1,000), so a practice's
  list and a GP's diary are the same size whatever N is; with `fixed`, always
  20 practices and 50 GPs (tiny practices at small N)
- N Patient `p-000001`.. with a unique NHS number (valid Modulus 11 check
  digit), name, gender, birthDate (1930-2020), address with postcode, telecom
  and a generalPractitioner reference to an Organization
- per Patient one Appointment `a-...` (booked, 2026, the patient and a
  practitioner as accepted participants) and one MedicationRequest `mr-...`
  (active order, SNOMED CT coded medication, requester a practitioner).

The same N, seed and practice counts always give byte-identical output, and
patient i is the same person whatever N is (given the same practice counts) (every patient is drawn from its own seeded generator), so
a population of 1,000 is the first 1,000 patients of a population of 100,000.
Python 3 standard library only.
"""

import argparse
import datetime as dt
import json
import random
import sys

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
SDS_USER_SYSTEM = "https://fhir.nhs.uk/Id/sds-user-id"
SNOMED = "http://snomed.info/sct"

N_ORGS, N_PRACS, N_LOCS = 20, 50, 20

FAMILY = """Smith Jones Williams Taylor Brown Davies Evans Wilson Thomas Johnson Roberts
Robinson Thompson Wright Walker White Edwards Hughes Green Hall Lewis Harris Clarke
Patel Jackson Wood Turner Martin Cooper Hill Ward Morris Moore Clark Lee King Baker
Harrison Morgan Allen James Scott Phillips Watson Davis Parker Price Bennett Young
Griffiths Mitchell Kelly Cook Carter Richardson Bailey Collins Bell Shaw Murphy Miller
Cox Richards Khan Marshall Anderson Simpson Ellis Adams Singh Begum Wilkinson Foster
Chapman Powell Webb Rogers Gray Mason Ali Hunt Hussain Campbell Matthews Owen Palmer
Holmes Mills Barnes Knight Lloyd Butler Russell Barker Fisher Stevens Jenkins Murray
Dixon Harvey Graham Pearson Ahmed Fletcher Walsh Kaur Gibson Howard Andrews Stewart
Elliott Reynolds Saunders Payne Fox Ford Pearce Day Brooks West Lawrence Cole Atkinson
Bradley Spencer Gill Dawson Ball Burton O'Brien Watts Rose Booth Perry Ryan Grant Wells
Armstrong Francis Rees Hayes Hart Hudson Newman Barrett Webster Hunter Gregory Carr Lowe
Page Marsh Riley Dunn Woods Parsons Berry Stone Reid Holland Hawkins Harding Porter
Robertson Newton Oliver Reed Kennedy Williamson Bird Gardner Shah Dean Lane Cooke Bates
Henderson Parry Burgess Bishop Walton Burns Nicholson Shepherd Ross Cross Long Freeman
Warren Nicholls Hamilton Byrne Sutton McDonald Yates Hodgson Robson Curtis Hopkins
O'Connor Harper Coleman Watkins Moss McCarthy Chambers O'Neill Griffin Sharp Hardy
Wheeler Potter Osborne Johnston Gordon Doyle Wallace George Jordan Hutchinson Rowe
Burke May Pritchard Gilbert Willis Higgins Read Miles Stevenson Stephenson Hammond
Arnold Buckley Walters Hewitt Barber Nelson Slater Austin Sullivan Whitehead Mann Frost
Lambert Stephens Blake Akhtar Lynch Goodwin Barton Woodward Thomson Cunningham Quinn
Barnett Baxter Bibi Clayton Nash Greenwood Jennings Holt Kemp Poole Gallagher Bond
Stokes Tucker Davidson Fowler Heath Norman Middleton Lawson Banks French Stanley Jarvis
Gibbs Ferguson Hayward Carroll Douglas Dickinson Todd Barlow Peters Lucas Knowles Hartley
Miah Simmons Morton Alexander Field Morrison Norris Townsend Preston Hancock Thornton
Baldwin Burrows Briggs Storey Pugh Goddard Nolan Howe Nwosu Okafor Adeyemi Mensah Kowalski
Nowak Wisniewski Zhang Wang Chen Li Nguyen Das Rahman Iqbal Mahmood Chowdhury Uddin""".split()

GIVEN_F = """Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Freya Willow Florence
Emily Ella Poppy Evie Elsie Charlotte Evelyn Sienna Sofia Daisy Phoebe Sophie Alice Harper
Ruby Matilda Emma Margaret Mary Patricia Susan Linda Elizabeth Sarah Karen Helen Julie
Jennifer Joan Dorothy Barbara Jean Christine Janet Anne Catherine Jacqueline Pauline Gillian
Diane Deborah Tracey Nicola Joanne Claire Rachel Rebecca Hannah Laura Gemma Kirsty Amy
Lauren Chloe Jessica Megan Holly Aisha Fatima Zara Maryam Priya Anjali Aaliyah Niamh Siobhan
Bethan Cerys Eilidh Ffion Agnieszka Marta Yetunde Chiamaka Mei Ling""".split()

GIVEN_M = """Noah Oliver George Arthur Muhammad Leo Harry Oscar Archie Henry Theodore Freddie Jack
Charlie Theo Alfie Jacob Thomas Finley Arlo William Lucas Roman Tommy Isaac Teddy Alexander
Luca Edward James Joshua Albie Elijah Max Mohammed Reggie Hugo Louie John David Michael Peter
Paul Robert Richard Stephen Christopher Andrew Mark Ian Gary Kevin Anthony Brian Kenneth
Raymond Derek Colin Keith Alan Graham Trevor Martin Philip Simon Neil Darren Lee Craig Jason
Daniel Matthew Ryan Liam Connor Callum Kieran Jamie Ben Sam Ahmed Ali Omar Imran Rajesh Sanjay
Arjun Dylan Rhys Owen Gareth Declan Ciaran Angus Euan Piotr Tomasz Chinedu Kwame Wei Jun""".split()

# (post town, postcode area) pairs for addresses.
TOWNS = [
    ("Leeds", "LS"), ("Manchester", "M"), ("Birmingham", "B"), ("Newcastle upon Tyne", "NE"),
    ("Bristol", "BS"), ("Sheffield", "S"), ("Liverpool", "L"), ("Nottingham", "NG"),
    ("Leicester", "LE"), ("Coventry", "CV"), ("Bradford", "BD"), ("Norwich", "NR"),
    ("Exeter", "EX"), ("York", "YO"), ("Cambridge", "CB"), ("Oxford", "OX"),
    ("Southampton", "SO"), ("Brighton", "BN"), ("Plymouth", "PL"), ("Hull", "HU"),
]
STREETS = """High Street|Station Road|Church Lane|Victoria Road|Green Lane|Manor Road|Park Road
|Church Street|Queens Road|Kings Road|New Road|Mill Lane|School Lane|The Avenue|North Street
|Grange Road|London Road|Chester Road|Springfield Road|Albert Road|Windsor Road|Oak Avenue
|Elm Grove|Meadow Way|Orchard Close""".replace("\n", "").split("|")
# Postcode inward-code letters never use C, I, K, M, O, V.
INWARD_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"

# SNOMED CT (UK drug extension) codes, a small illustrative list.
MEDICATIONS = [
    ("322236009", "Paracetamol 500mg tablets", "Two tablets up to four times a day"),
    ("319773006", "Amlodipine 5mg tablets", "One tablet once a day"),
    ("376988009", "Levothyroxine sodium 100microgram tablets", "One tablet each morning"),
    ("325278007", "Metformin 500mg tablets", "One tablet twice a day with meals"),
    ("320000009", "Simvastatin 40mg tablets", "One tablet at night"),
    ("317335000", "Omeprazole 20mg gastro-resistant capsules", "One capsule once a day"),
    ("323509004", "Amoxicillin 500mg capsules", "One capsule three times a day for 5 days"),
    ("320176004", "Salbutamol 100micrograms/dose inhaler", "Two puffs when required"),
]

YEAR_2026 = dt.date(2026, 1, 1)
BIRTH_FIRST = dt.date(1930, 1, 1)
BIRTH_DAYS = (dt.date(2020, 12, 31) - BIRTH_FIRST).days + 1


def nhs_check_digit(first9):
    """Modulus 11 check digit for 9 digits, or None when the result is 10 (invalid)."""
    total = sum(int(d) * w for d, w in zip(first9, range(10, 1, -1)))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def nhs_number(rng, used):
    """A fresh 10-digit NHS number in the 9xx test range with a valid check digit."""
    while True:
        first9 = "9" + "".join(rng.choice("0123456789") for _ in range(8))
        check = nhs_check_digit(first9)
        if check is None:
            continue
        value = f"{first9}{check}"
        if value not in used:
            used.add(value)
            return value


def postcode(rng, area):
    return f"{area}{rng.randint(1, 29)} {rng.randint(0, 9)}{rng.choice(INWARD_LETTERS)}{rng.choice(INWARD_LETTERS)}"


def org_id(i):
    return f"org-{i:02d}"


def prac_id(i):
    return f"prac-{i:03d}"


def loc_id(i):
    return f"loc-{i:02d}"


def organizations(rng):
    out = []
    for i in range(1, N_ORGS + 1):
        town, area = TOWNS[(i - 1) % len(TOWNS)]
        ods = f"{chr(ord('A') + (i * 7) % 26)}{81000 + i * 37:05d}"
        out.append({
            "resourceType": "Organization",
            "id": org_id(i),
            "identifier": [{"system": ODS_SYSTEM, "value": ods}],
            "active": True,
            "type": [{"coding": [{
                "system": "https://fhir.nhs.uk/CodeSystem/organisation-role",
                "code": "76",
                "display": "GP PRACTICE",
            }]}],
            "name": f"{rng.choice(STREETS).split()[0]} {town} Medical Practice",
            "telecom": [{"system": "phone", "value": f"0113 496 {i:04d}", "use": "work"}],
            "address": [{
                "use": "work",
                "line": [f"{rng.randint(1, 200)} {rng.choice(STREETS)}"],
                "city": town,
                "postalCode": postcode(rng, area),
                "country": "GB",
            }],
        })
    return out


def practitioners(rng):
    out = []
    for i in range(1, N_PRACS + 1):
        female = rng.random() < 0.5
        out.append({
            "resourceType": "Practitioner",
            "id": prac_id(i),
            "identifier": [{"system": SDS_USER_SYSTEM, "value": f"{555000000000 + i * 101}"}],
            "active": True,
            "name": [{
                "use": "official",
                "family": rng.choice(FAMILY),
                "given": [rng.choice(GIVEN_F if female else GIVEN_M)],
                "prefix": ["Dr"],
            }],
            "gender": "female" if female else "male",
        })
    return out


def locations(rng):
    out = []
    for i in range(1, N_LOCS + 1):
        town, area = TOWNS[(i - 1) % len(TOWNS)]
        out.append({
            "resourceType": "Location",
            "id": loc_id(i),
            "status": "active",
            "name": f"{town} Surgery",
            "mode": "instance",
            "address": {
                "use": "work",
                "line": [f"{rng.randint(1, 200)} {rng.choice(STREETS)}"],
                "city": town,
                "postalCode": postcode(rng, area),
                "country": "GB",
            },
            "managingOrganization": {"reference": f"Organization/{org_id((i - 1) % N_ORGS + 1)}"},
        })
    return out


def person(i, rng, used_nhs):
    """Patient i with its Appointment and MedicationRequest."""
    pid = f"p-{i:06d}"
    r = rng.random()
    gender = "female" if r < 0.49 else "male" if r < 0.98 else "other" if r < 0.99 else "unknown"
    if gender == "female":
        givens = GIVEN_F
    elif gender == "male":
        givens = GIVEN_M
    else:
        givens = GIVEN_F + GIVEN_M
    given = [rng.choice(givens)]
    if rng.random() < 0.4:
        given.append(rng.choice(givens))
    family = rng.choice(FAMILY)
    birth = BIRTH_FIRST + dt.timedelta(days=rng.randrange(BIRTH_DAYS))
    town, area = rng.choice(TOWNS)
    gp = rng.randint(1, N_ORGS)
    phone = f"07700 900{rng.randint(0, 999):03d}"
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": NHS_SYSTEM, "value": nhs_number(rng, used_nhs)}],
        "active": True,
        "name": [{"use": "official", "family": family, "given": given}],
        "telecom": [
            {"system": "phone", "value": phone, "use": "mobile"},
            {"system": "email",
             "value": f"{given[0].lower()}.{family.lower().replace(chr(39), '')}{i}@example.org",
             "use": "home"},
        ],
        "gender": gender,
        "birthDate": birth.isoformat(),
        "address": [{
            "use": "home",
            "line": [f"{rng.randint(1, 250)} {rng.choice(STREETS)}"],
            "city": town,
            "postalCode": postcode(rng, area),
            "country": "GB",
        }],
        "generalPractitioner": [{"reference": f"Organization/{org_id(gp)}"}],
    }

    prac = prac_id(rng.randint(1, N_PRACS))
    day = YEAR_2026 + dt.timedelta(days=rng.randrange(365))
    minute = 8 * 60 + 10 * rng.randrange(60)  # 08:00..17:50 in 10-minute slots
    start = dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60)
    end = start + dt.timedelta(minutes=10)
    appointment = {
        "resourceType": "Appointment",
        "id": f"a-{i:06d}",
        "status": "booked",
        "serviceCategory": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-category",
                                         "code": "17", "display": "General Practice"}]}],
        "description": "GP consultation",
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "minutesDuration": 10,
        "created": (day - dt.timedelta(days=rng.randint(1, 28))).isoformat(),
        "participant": [
            {"actor": {"reference": f"Patient/{pid}"}, "required": "required", "status": "accepted"},
            {"actor": {"reference": f"Practitioner/{prac}"}, "required": "required", "status": "accepted"},
        ],
    }

    code, display, dose = rng.choice(MEDICATIONS)
    authored = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(365))
    medication_request = {
        "resourceType": "MedicationRequest",
        "id": f"mr-{i:06d}",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{pid}"},
        "authoredOn": authored.isoformat(),
        "requester": {"reference": f"Practitioner/{prac_id(rng.randint(1, N_PRACS))}"},
        "dosageInstruction": [{"text": dose}],
        # UK Core (as profiled in profiles/ukcore) requires substitution.
        "substitution": {"allowedBoolean": True},
    }
    return patient, appointment, medication_request


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int, help="number of Patients")
    ap.add_argument("out", help="output NDJSON file")
    ap.add_argument("--seed", type=int, default=20260101)
    ap.add_argument("--practices", choices=("scaled", "fixed"), default="scaled")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("N must be at least 1")
    global N_ORGS, N_PRACS, N_LOCS
    if args.practices == "scaled":
        N_ORGS = max(1, round(args.n / 5000))
        N_PRACS = max(1, round(args.n / 2000))
        N_LOCS = N_ORGS

    fixed = random.Random(args.seed)
    dump = lambda r: json.dumps(r, separators=(",", ":"), ensure_ascii=False)  # noqa: E731
    counts = {}
    used_nhs = set()
    with open(args.out, "w", encoding="utf-8") as f:
        def write(resource):
            counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
            f.write(dump(resource))
            f.write("\n")

        for r in organizations(fixed) + practitioners(fixed) + locations(fixed):
            write(r)
        for i in range(1, args.n + 1):
            # One generator per patient: patient i does not depend on N.
            rng = random.Random(args.seed * 1_000_003 + i)
            for r in person(i, rng, used_nhs):
                write(r)
    total = sum(counts.values())
    detail = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"wrote {total} resources to {args.out} ({detail})", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
