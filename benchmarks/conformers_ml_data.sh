#!/usr/bin/env bash
# GFN2-xTB training data for an ML card that relaxes ETKDG conformers of FreeSolv molecules
# (issue 15, "ETKDG + relax with an ML card"). Package commands only; train and val molecules
# of the committed reference split (seed 123) -- never the test molecules.
#
#   bash benchmarks/conformers_ml_data.sh relax   # ETKDG embeddings + frames along their xTB relaxations
#   bash benchmarks/conformers_ml_data.sh md      # short GFN2-xTB MD (600 K start, ~300 K mean) from the
#                                                 # reference minimum of every MD_STRIDE-th (3) molecule
#   bash benchmarks/conformers_ml_data.sh refs    # the reference conformers, labelled (forces)
#   bash benchmarks/conformers_ml_data.sh join    # -> OUT/train.extxyz, OUT/val.extxyz
#
# Every stage resumes (molecules already written are skipped). OUT defaults to out/conformers_ml.
set -euo pipefail
STAGE=${1:?stage: relax, md, refs or join}
OUT=${OUT:-out/conformers_ml}
REF=${REF:-benchmarks/conformer_data/ref_freesolv}
CLI=${CLI:-.venv/bin/ase-mlmd}
MD_STRIDE=${MD_STRIDE:-3}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
for split in train val; do  # 'SMILES id' of the split (csv module: SMILES may hold commas)
  .venv/bin/python -c 'import csv, sys
for r in csv.DictReader(open(sys.argv[1])):
    if r["split"] == sys.argv[2]:
        print(r["smiles"], r["id"])' "$REF/molecules.csv" "$split" > "$OUT/$split.smi"
done
case "$STAGE" in
relax)
  for split in train val; do
    $CLI conformers "$OUT/$split.smi" --method etkdg+relax --calc gfn2-xtb -n 4 --seed 0 \
      --relax-frames "$OUT/relax_$split" --relax-every 6 -o "$OUT/relaxed_$split/"
  done ;;
md)
  for split in train val; do
    mkdir -p "$OUT/md_$split"
    n=0
    for f in "$REF/$split"/*.extxyz; do
      n=$((n + 1)); [ $(( (n - 1) % MD_STRIDE )) -eq 0 ] || continue  # every MD_STRIDE-th molecule
      id=$(basename "$f" .extxyz)
      [ -s "$OUT/md_$split/$id.done" ] && continue
      $CLI sample "$f" --index 0 --reference gfn2-xtb --temperature 600 --timestep 0.5 \
        --steps 120 --every 12 --seed 0 --no-progress -o "$OUT/md_$split/$id.extxyz"
      echo ok > "$OUT/md_$split/$id.done"
    done
  done ;;
refs)
  for split in train val; do
    cat "$REF/$split"/*.extxyz > "$OUT/refs_$split.extxyz"
    $CLI label "$OUT/refs_$split.extxyz" --reference gfn2-xtb --no-progress -o "$OUT/refs_${split}_labelled.extxyz"
  done ;;
join)
  for split in train val; do
    cat "$OUT/relax_$split"/*.extxyz "$OUT/md_$split"/*.extxyz "$OUT/refs_${split}_labelled.extxyz" > "$OUT/$split.extxyz"
    echo "$split: $(grep -c '^Properties' "$OUT/$split.extxyz") frames"
  done ;;
*) echo "unknown stage $STAGE" >&2; exit 2 ;;
esac
